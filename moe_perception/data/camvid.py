"""CamVid (SegNet layout): ``<split>/X.png`` images, ``<split>annot/X.png`` class ids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from moe_perception.data.common import IGNORE_INDEX, SegmentationSample, read_mask, read_rgb
from moe_perception.data.splits import select_fraction

CAMVID_CLASSES: tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
# The usual CamVid colours (SegNet tutorial palette), RGB.
CAMVID_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
CAMVID_VOID = 11
CAMVID_SPLITS = ("train", "val", "test")


def camvid_train_ids(raw: np.ndarray) -> np.ndarray:
    """Raw CamVid label values as train ids: 0-10 kept, void (11 and above) -> 255."""
    return np.where(raw >= CAMVID_VOID, IGNORE_INDEX, raw).astype(np.uint8)


def camvid_sequence(name: str) -> str:
    """Recording sequence of a frame, from its file name (``0001TP_006690`` -> ``0001TP``)."""
    return Path(name).stem.rsplit("_", 1)[0]


class CamVid:
    """CamVid frames of one or more splits, optionally restricted to some sequences.

    Args:
        root: folder holding ``train/``, ``trainannot/``, ... .
        splits: which splits to read, e.g. ``("train", "val")``.
        sequences: keep only frames of these recording sequences (``None``: all).
        files: keep only these frame stems (``None``: all).
        fraction: keep this part of each sequence in file-name order, e.g. ``(0, 0.8)``
            (see :mod:`moe_perception.data.splits`; ``None``: all).

    Raises:
        FileNotFoundError: a split folder or a frame's label is missing.
        ValueError: the selection is empty.
    """

    classes = CAMVID_CLASSES
    colors = CAMVID_COLORS

    def __init__(
        self,
        root: str | Path,
        splits: Sequence[str] = ("train",),
        sequences: Sequence[str] | None = None,
        files: Sequence[str] | None = None,
        fraction: Sequence[float] | None = None,
    ) -> None:
        self.root = Path(root)
        self.items: list[tuple[Path, Path]] = []
        wanted_files = None if files is None else {Path(f).stem for f in files}
        for split in splits:
            if split not in CAMVID_SPLITS:
                raise ValueError(f"unknown CamVid split {split!r}; choose from {CAMVID_SPLITS}")
            image_dir = self.root / split
            if not image_dir.is_dir():
                raise FileNotFoundError(f"CamVid split folder not found: {image_dir}")
            for image in sorted(image_dir.glob("*.png")):
                if sequences is not None and camvid_sequence(image.name) not in sequences:
                    continue
                if wanted_files is not None and image.stem not in wanted_files:
                    continue
                label = self.root / f"{split}annot" / image.name
                if not label.is_file():
                    raise FileNotFoundError(f"CamVid label missing for {image}: {label}")
                self.items.append((image, label))
        self.items = select_fraction(
            self.items, lambda i: camvid_sequence(i[0].name), lambda i: i[0].name, fraction
        )
        if not self.items:
            raise ValueError(
                f"no CamVid frames in {self.root} for splits={list(splits)}, "
                f"sequences={sequences}, files={'given' if files else None}, fraction={fraction}"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> SegmentationSample:
        image_path, label_path = self.items[index]
        label = camvid_train_ids(read_mask(label_path))
        return SegmentationSample(read_rgb(image_path), label, image_path.stem)

    def sequence_of(self, index: int) -> str:
        return camvid_sequence(self.items[index][0].name)
