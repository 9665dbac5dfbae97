"""One door to every dataset reader: ``open_dataset(name, root, ...)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

from moe_perception.data.common import SegmentationSample

DatasetName = Literal["camvid", "a2d2", "cityscapes"]
DATASET_NAMES: tuple[DatasetName, ...] = ("camvid", "a2d2", "cityscapes")


class SegmentationDataset(Protocol):
    """What the readers share: class names and colours, samples, their sequences."""

    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> SegmentationSample: ...

    def sequence_of(self, index: int) -> str: ...


def open_dataset(
    name: DatasetName,
    root: str | Path,
    splits: Sequence[str],
    sequences: Sequence[str] | None = None,
    files: Sequence[str] | None = None,
    fraction: Sequence[float] | None = None,
    a2d2_mapping: str = "paper38",
) -> SegmentationDataset:
    """Open a subset of a dataset.

    Args:
        name: ``camvid``, ``a2d2`` or ``cityscapes``.
        root: the dataset folder.
        splits: official splits (A2D2: ``all``).
        sequences: CamVid sequences, A2D2 scenes or Cityscapes cities to keep.
        files: frame stems to keep.
        fraction: part of each sequence to keep (see :mod:`moe_perception.data.splits`).
        a2d2_mapping: ``paper38`` or ``coarse`` (A2D2 only).

    Raises:
        ValueError: an unknown dataset, or a reader's own errors.
    """
    if name == "camvid":
        from moe_perception.data.camvid import CamVid

        return CamVid(root, splits, sequences, files, fraction)
    if name == "cityscapes":
        from moe_perception.data.cityscapes import Cityscapes

        return Cityscapes(root, splits, sequences, files, fraction)
    if name == "a2d2":
        from moe_perception.data.a2d2 import A2D2

        return A2D2(root, splits, sequences, files, fraction, mapping=a2d2_mapping)  # type: ignore[arg-type]
    raise ValueError(f"unknown dataset {name!r}; choose from {DATASET_NAMES}")
