"""CamVid sequences to rosbag2 (``moe-perception camvid-to-bag``): sample bags for demos."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from moe_perception.bags.bagfile import BagFormat
from moe_perception.bags.convert import (
    CameraStream,
    ConversionSummary,
    Frame,
    read_single_channel_file,
    write_frames,
)

CamvidSplit = Literal["train", "val", "test"]
# An arbitrary but fixed start (2023-11-14T22:13:20Z): CamVid frames carry no time,
# and a fixed one makes the same command write the same bag.
DEFAULT_START_TIME_S = 1_700_000_000.0


@dataclass(frozen=True)
class SequenceSpan:
    """Frames ``start`` .. ``start + count - 1`` (file-name order) of one sequence."""

    sequence: str
    start: int = 0
    count: int | None = None

    @classmethod
    def parse(cls, text: str) -> SequenceSpan:
        """``NAME``, ``NAME:START`` or ``NAME:START:COUNT`` (e.g. ``Seq05VD:77:6``)."""
        parts = text.split(":")
        if not parts[0] or len(parts) > 3:
            raise ValueError(f"sequence {text!r}: expected NAME[:START[:COUNT]]")
        try:
            start = int(parts[1]) if len(parts) > 1 and parts[1] else 0
            count = int(parts[2]) if len(parts) > 2 and parts[2] else None
        except ValueError as error:
            raise ValueError(f"sequence {text!r}: START and COUNT must be integers") from error
        if start < 0 or (count is not None and count < 1):
            raise ValueError(f"sequence {text!r}: START must be >= 0 and COUNT >= 1")
        return cls(parts[0], start, count)


@dataclass(frozen=True)
class CamvidBagOptions:
    """What ``camvid-to-bag`` writes.

    Attributes:
        sequences: the spans, written one after the other.
        split: the CamVid split holding them.
        image_topic: rgb8 image topic.
        label_topic: mono8 class-id topic (CamVid's void 11 written as 255); ``None``
            derives ``<camera namespace>/labels``; ``""`` writes no labels.
        frame_id: header frame id.
        start_time_s: stamp of the first frame, seconds since the epoch.
        period_s: time between consecutive frames (CamVid frames are 1 s apart).
        bag_format: storage, metadata version, compression.
    """

    sequences: tuple[SequenceSpan, ...]
    split: CamvidSplit = "test"
    image_topic: str = "/camera/image_raw"
    label_topic: str | None = None
    frame_id: str = "camera_optical_frame"
    start_time_s: float = DEFAULT_START_TIME_S
    period_s: float = 1.0
    bag_format: BagFormat = field(default_factory=BagFormat)

    @property
    def resolved_label_topic(self) -> str | None:
        if self.label_topic is None:
            from moe_perception.render import camera_namespace

            return f"{camera_namespace(self.image_topic)}/labels"
        return self.label_topic or None


def select_frames(root: Path, options: CamvidBagOptions) -> list[tuple[Path, Path]]:
    """(image, label) paths of the chosen spans, in order.

    Raises:
        FileNotFoundError: the split folder or a label is missing.
        ValueError: an unknown sequence, or a span past the sequence's end.
    """
    from moe_perception.data.camvid import CamVid

    selected: list[tuple[Path, Path]] = []
    for span in options.sequences:
        try:
            dataset = CamVid(root, splits=(options.split,), sequences=(span.sequence,))
        except ValueError as error:
            raise ValueError(
                f"sequence {span.sequence!r} has no frames in {root / options.split}"
            ) from error
        items = dataset.items
        stop = len(items) if span.count is None else span.start + span.count
        if span.start >= len(items) or stop > len(items):
            raise ValueError(
                f"sequence {span.sequence} in {root / options.split} has {len(items)} frames; "
                f"asked for frames {span.start}..{stop - 1}"
            )
        selected.extend(items[span.start : stop])
    return selected


def read_camvid_label(path: Path) -> np.ndarray:
    """A CamVid label PNG as class ids with void (11 and above) as 255."""
    from moe_perception.data.camvid import camvid_train_ids

    return camvid_train_ids(read_single_channel_file(path))


def camvid_to_bag(
    root: str | Path, out: str | Path, options: CamvidBagOptions, progress: bool | None = None
) -> ConversionSummary:
    """Write CamVid frames as a rosbag2 (images, and labels unless disabled).

    Raises:
        FileNotFoundError, ValueError: bad input, naming the file; FileExistsError: ``out``
            exists.
    """
    from moe_perception.data.camvid import CAMVID_CLASSES

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CamVid folder not found: {root}")
    if options.period_s <= 0:
        raise ValueError(f"period must be positive, got {options.period_s}")
    if options.start_time_s < 0:
        raise ValueError(f"start time must not be negative, got {options.start_time_s}")
    if not options.sequences:
        raise ValueError("no sequence given")
    label_topic = options.resolved_label_topic
    stream = CameraStream(options.image_topic, options.frame_id, label_topic=label_topic)
    start_ns = round(options.start_time_s * 1e9)
    period_ns = round(options.period_s * 1e9)
    frames = [
        Frame(start_ns + i * period_ns, stream, image, label)
        for i, (image, label) in enumerate(select_frames(root, options))
    ]
    return write_frames(
        out,
        frames,
        options.bag_format,
        read_label=read_camvid_label if label_topic else None,
        label_classes=CAMVID_CLASSES,
        progress=progress,
    )


def parse_spans(texts: Sequence[str]) -> tuple[SequenceSpan, ...]:
    """Parse ``--sequence`` values."""
    return tuple(SequenceSpan.parse(text) for text in texts)
