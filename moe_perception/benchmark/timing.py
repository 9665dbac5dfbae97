"""Wall-clock timing of several callables side by side (interleaved, round-robin).

Timing the contenders in turn within each round, rather than one after the other, keeps
their ratios honest on a machine whose load drifts: a slow spell hits all of them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Timed calls of one callable.

    Attributes:
        samples: seconds of each timed call, in the order they ran.
        warmup: seconds of the untimed first call (one-time costs included).
    """

    samples: tuple[float, ...]
    warmup: float

    @property
    def best(self) -> float:
        """The fastest call: the cost with the least interference from other work."""
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_s": self.best,
            "median_s": self.median,
            "samples_s": list(self.samples),
            "warmup_s": self.warmup,
        }


def synchronize(device: Any = None) -> None:
    """Wait for queued CUDA work so that a timer sees it; a no-op on the CPU."""
    import torch

    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(call: Callable[[], object], device: Any, clock: Callable[[], float]) -> float:
    synchronize(device)
    start = clock()
    call()
    synchronize(device)
    return clock() - start


def time_interleaved(
    calls: Mapping[str, Callable[[], object]],
    repeats: int = 5,
    budget_s: float | None = None,
    device: Any = None,
    single_call_s: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Time several callables in rounds, each once per round, after one warm-up call each.

    Args:
        calls: callables by name; each runs the work to time (and returns anything).
        repeats: timed calls of each callable at most.
        budget_s: if given, a callable whose warm-up took ``t`` seconds is timed
            ``clamp(budget_s / t, 1, repeats)`` times, so slow contenders cost fewer calls.
        device: synchronised around each call when it is a CUDA device.
        single_call_s: if given, a callable whose warm-up took at least this long is not
            called again: its warm-up is its one sample (one-time costs are small against
            such a call; the :class:`Timing` records it with ``warmup`` equal to it).
        clock: seconds since any fixed point (replaceable in tests).

    Returns:
        A :class:`Timing` per name, in the order of ``calls``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    warmups = {name: _timed(call, device, clock) for name, call in calls.items()}
    counts = {
        name: repeats if budget_s is None else max(1, min(repeats, int(budget_s / max(t, 1e-9))))
        for name, t in warmups.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in calls}
    if single_call_s is not None:
        for name, seconds in warmups.items():
            if seconds >= single_call_s:
                counts[name] = 0
                samples[name].append(seconds)
    for round_index in range(max(counts.values(), default=0)):
        for name, call in calls.items():
            if round_index < counts[name]:
                samples[name].append(_timed(call, device, clock))
    return {name: Timing(tuple(samples[name]), warmups[name]) for name in calls}
