"""Cityscapes: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
``gtFine/<split>/<city>/*_gtFine_labelIds.png``, mapped to the 19 training classes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from moe_perception.data.common import IGNORE_INDEX, SegmentationSample, read_mask, read_rgb
from moe_perception.data.splits import select_fraction

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)
# labelId -> trainId for the 19 evaluated classes; every other id is ignored.
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
CITYSCAPES_SPLITS = ("train", "val", "test")


def label_id_lut() -> np.ndarray:
    """(256,) uint8 table labelId -> trainId (255 for ignored ids)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        lut[label_id] = train_id
    return lut


def cityscapes_city(name: str) -> str:
    """City of a frame: ``aachen_000000_000019_leftImg8bit`` -> ``aachen``."""
    return Path(name).name.split("_", 1)[0]


class Cityscapes:
    """Cityscapes fine annotations as the 19 train ids.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        splits: ``train``, ``val`` or ``test``.
        sequences: keep only these cities (``None``: all).
        files: keep only these image stems.
        fraction: keep this part of each city (see :mod:`moe_perception.data.splits`).

    Raises:
        FileNotFoundError: a split folder or a frame's label is missing.
        ValueError: an unknown split or an empty selection.
    """

    classes = CITYSCAPES_CLASSES
    colors = CITYSCAPES_COLORS

    def __init__(
        self,
        root: str | Path,
        splits: Sequence[str] = ("train",),
        sequences: Sequence[str] | None = None,
        files: Sequence[str] | None = None,
        fraction: Sequence[float] | None = None,
    ) -> None:
        self.root = Path(root)
        self._lut = label_id_lut()
        wanted = None if files is None else {Path(f).stem for f in files}
        items: list[tuple[Path, Path]] = []
        for split in splits:
            if split not in CITYSCAPES_SPLITS:
                raise ValueError(
                    f"unknown Cityscapes split {split!r}; choose from {CITYSCAPES_SPLITS}"
                )
            image_dir = self.root / "leftImg8bit" / split
            if not image_dir.is_dir():
                raise FileNotFoundError(f"Cityscapes split folder not found: {image_dir}")
            for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
                if sequences is not None and image.parent.name not in sequences:
                    continue
                if wanted is not None and image.stem not in wanted:
                    continue
                stem = image.name[: -len("_leftImg8bit.png")]
                label = self.root / "gtFine" / split / image.parent.name
                label = label / f"{stem}_gtFine_labelIds.png"
                if not label.is_file():
                    raise FileNotFoundError(f"Cityscapes label missing for {image}: {label}")
                items.append((image, label))
        self.items = select_fraction(
            items, lambda i: i[0].parent.name, lambda i: i[0].name, fraction
        )
        if not self.items:
            raise ValueError(
                f"no Cityscapes frames in {self.root} for splits={list(splits)}, "
                f"cities={sequences}, files={'given' if files else None}, fraction={fraction}"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> SegmentationSample:
        image_path, label_path = self.items[index]
        label = self._lut[read_mask(label_path)]
        return SegmentationSample(read_rgb(image_path), label, image_path.stem)

    def sequence_of(self, index: int) -> str:
        return self.items[index][0].parent.name
