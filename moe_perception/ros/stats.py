"""Per-camera counters for ``/diagnostics`` and a per-key throttle for error logs."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

# Latency and inference samples kept per diagnostics period; older ones are forgotten, so
# memory stays bounded at any frame rate.
MAX_SAMPLES = 1000


@dataclass(frozen=True)
class CameraReport:
    """One diagnostics period of one camera.

    Attributes:
        input_rate: messages received per second over the period.
        output_rate: frames published per second over the period.
        latency_mean: mean seconds from image stamp to publish (``nan``: none measured).
        latency_max: the largest of those.
        inference_mean: mean seconds of the batched network call that served the frames.
        received: messages received since start.
        published: frames published since start.
        dropped: frames replaced by a newer one before inference, since start.
        rejected: messages that could not be decoded or segmented, since start.
        rejected_in_period: of those, how many in this period.
        last_error: the latest rejection reason ("" if none).
    """

    input_rate: float
    output_rate: float
    latency_mean: float
    latency_max: float
    inference_mean: float
    received: int
    published: int
    dropped: int
    rejected: int
    rejected_in_period: int
    last_error: str


class CameraStats:
    """Thread-safe counters of one camera, read and reset once per diagnostics period."""

    def __init__(self, now: float) -> None:
        self._lock = threading.Lock()
        self._period_start = now
        self.received = self.published = self.dropped = self.rejected = 0
        self._received_mark = self._published_mark = self._rejected_mark = 0
        self._latencies: deque[float] = deque(maxlen=MAX_SAMPLES)
        self._inference: deque[float] = deque(maxlen=MAX_SAMPLES)
        self._last_error = ""

    def on_received(self) -> None:
        with self._lock:
            self.received += 1

    def on_dropped(self) -> None:
        with self._lock:
            self.dropped += 1

    def on_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            self._last_error = reason

    def on_published(self, latency: float | None, inference: float) -> None:
        """A frame was published ``latency`` seconds after its stamp (``None``: no stamp)."""
        with self._lock:
            self.published += 1
            if latency is not None:
                self._latencies.append(latency)
            self._inference.append(inference)

    def report(self, now: float) -> CameraReport:
        """The period since the last report; starts a new one."""
        with self._lock:
            elapsed = max(now - self._period_start, 1e-9)
            latencies, inference = list(self._latencies), list(self._inference)
            report = CameraReport(
                input_rate=(self.received - self._received_mark) / elapsed,
                output_rate=(self.published - self._published_mark) / elapsed,
                latency_mean=sum(latencies) / len(latencies) if latencies else float("nan"),
                latency_max=max(latencies) if latencies else float("nan"),
                inference_mean=sum(inference) / len(inference) if inference else float("nan"),
                received=self.received,
                published=self.published,
                dropped=self.dropped,
                rejected=self.rejected,
                rejected_in_period=self.rejected - self._rejected_mark,
                last_error=self._last_error,
            )
            self._period_start = now
            self._received_mark, self._published_mark = self.received, self.published
            self._rejected_mark = self.rejected
            self._latencies.clear()
            self._inference.clear()
            return report


class ErrorThrottle:
    """Lets one message per key through per ``period`` seconds and counts the rest.

    rclpy's ``throttle_duration_sec`` throttles per call site, so one noisy camera would
    hide another's errors; this throttles per key (e.g. per topic).
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now: float) -> int | None:
        """Whether a message for ``key`` may be logged now.

        Returns:
            ``None`` if it must be suppressed, else how many were suppressed since the last
            one that was let through.
        """
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)
