"""A2D2 semantic segmentation: RGB colour-coded labels collapsed to 38 (or 12) classes.

Layout (as Audi publishes it)::

    <root>/class_list.json                 "#rrggbb" -> name, 55 entries
    <root>/<scene>/camera/cam_<name>/<ts>_camera_<camname>_<id>.png   (+ .json)
    <root>/<scene>/label/cam_<name>/<ts>_label_<camname>_<id>.png     RGB colour codes

The 55 names number instances of some categories ("Car 1".."Car 4", "Pedestrian 1"..);
``paper38`` collapses them to the 38 categories (drop the trailing number), the set the
paper trained on; ``coarse`` groups those into 12 driving classes and ignores the ego
car, blurred areas and rain dirt. Every colour of a category maps to it; a colour that
``class_list.json`` does not list is ignored (255), never a class. A2D2 has no official
split: select scenes (``sequences``), file lists or fractions of each scene.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from moe_perception.data.common import IGNORE_INDEX, SegmentationSample, read_rgb
from moe_perception.data.splits import select_fraction

A2D2Mapping = Literal["paper38", "coarse"]
A2D2_MAPPINGS: tuple[A2D2Mapping, ...] = ("paper38", "coarse")

A2D2_CATEGORIES: tuple[str, ...] = (
    "Car",
    "Bicycle",
    "Pedestrian",
    "Truck",
    "Small vehicles",
    "Traffic signal",
    "Traffic sign",
    "Utility vehicle",
    "Sidebars",
    "Speed bumper",
    "Curbstone",
    "Solid line",
    "Irrelevant signs",
    "Road blocks",
    "Tractor",
    "Non-drivable street",
    "Zebra crossing",
    "Obstacles / trash",
    "Poles",
    "RD restricted area",
    "Animals",
    "Grid structure",
    "Signal corpus",
    "Drivable cobblestone",
    "Electronic traffic",
    "Slow drive area",
    "Nature object",
    "Parking area",
    "Sidewalk",
    "Ego car",
    "Painted driv. instr.",
    "Traffic guide obj.",
    "Dashed line",
    "RD normal street",
    "Sky",
    "Buildings",
    "Blurred area",
    "Rain dirt",
)

A2D2_COARSE_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "lane marking",
    "vehicle",
    "two-wheeler",
    "pedestrian",
    "traffic sign",
    "pole / structure",
    "obstacle",
    "nature",
    "sky",
    "building",
)
A2D2_COARSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (255, 255, 255),
    (0, 0, 142),
    (119, 11, 32),
    (220, 20, 60),
    (220, 220, 0),
    (153, 153, 153),
    (255, 0, 128),
    (107, 142, 35),
    (70, 130, 180),
    (70, 70, 70),
)
# Category -> coarse class (None: ignored).
A2D2_COARSE: dict[str, str | None] = {
    "Car": "vehicle",
    "Bicycle": "two-wheeler",
    "Pedestrian": "pedestrian",
    "Truck": "vehicle",
    "Small vehicles": "two-wheeler",
    "Traffic signal": "traffic sign",
    "Traffic sign": "traffic sign",
    "Utility vehicle": "vehicle",
    "Sidebars": "pole / structure",
    "Speed bumper": "road",
    "Curbstone": "sidewalk",
    "Solid line": "lane marking",
    "Irrelevant signs": "traffic sign",
    "Road blocks": "obstacle",
    "Tractor": "vehicle",
    "Non-drivable street": "sidewalk",
    "Zebra crossing": "lane marking",
    "Obstacles / trash": "obstacle",
    "Poles": "pole / structure",
    "RD restricted area": "road",
    "Animals": "obstacle",
    "Grid structure": "pole / structure",
    "Signal corpus": "pole / structure",
    "Drivable cobblestone": "road",
    "Electronic traffic": "traffic sign",
    "Slow drive area": "road",
    "Nature object": "nature",
    "Parking area": "road",
    "Sidewalk": "sidewalk",
    "Ego car": None,
    "Painted driv. instr.": "lane marking",
    "Traffic guide obj.": "obstacle",
    "Dashed line": "lane marking",
    "RD normal street": "road",
    "Sky": "sky",
    "Buildings": "building",
    "Blurred area": None,
    "Rain dirt": None,
}

_IMAGE_NAME = re.compile(r"(?P<ts>.+)_camera_(?P<cam>[a-z]+)_(?P<id>\d+)\.png")


def a2d2_category(name: str) -> str:
    """Category of an A2D2 colour name: ``"Car 3"`` -> ``"Car"``, ``"Sky"`` -> ``"Sky"``."""
    return re.sub(r"\s+\d+$", "", name.strip())


def _parse_color(code: str, path: Path) -> int:
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", code):
        raise ValueError(f"{path}: {code!r} is not a '#rrggbb' colour")
    return int(code[1:], 16)


def read_class_list(path: str | Path) -> dict[int, str]:
    """Read ``class_list.json``: 24-bit colour code (0xRRGGBB) -> A2D2 name.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a mapping of '#rrggbb' to names, or a name of no known category.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"A2D2 class list not found: {path}")
    with path.open(encoding="utf-8") as stream:
        try:
            raw = json.load(stream)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected a JSON object mapping '#rrggbb' to class names")
    table: dict[int, str] = {}
    for code, name in raw.items():
        if not isinstance(name, str) or a2d2_category(name) not in A2D2_CATEGORIES:
            raise ValueError(f"{path}: colour {code} has unknown class name {name!r}")
        table[_parse_color(code, path)] = name
    return table


def color_table(class_list: dict[int, str], mapping: A2D2Mapping) -> dict[int, int]:
    """Colour code -> class id under ``mapping``; ignored categories are left out."""
    if mapping not in A2D2_MAPPINGS:
        raise ValueError(f"unknown A2D2 mapping {mapping!r}; choose from {A2D2_MAPPINGS}")
    table: dict[int, int] = {}
    for code, name in class_list.items():
        category = a2d2_category(name)
        if mapping == "paper38":
            table[code] = A2D2_CATEGORIES.index(category)
        else:
            coarse = A2D2_COARSE[category]
            if coarse is not None:
                table[code] = A2D2_COARSE_CLASSES.index(coarse)
    return table


def decode_color_label(rgb: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """RGB colour-coded label (H, W, 3) uint8 -> class ids (H, W) uint8, unknown = 255."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB label (H, W, 3), got shape {rgb.shape}")
    codes = (
        (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    )
    unique, inverse = np.unique(codes, return_inverse=True)
    ids = np.array([table.get(int(code), IGNORE_INDEX) for code in unique], dtype=np.uint8)
    return ids[inverse].reshape(codes.shape)


def a2d2_label_path(image: Path) -> Path:
    """``<scene>/camera/cam_x/<ts>_camera_<cam>_<id>.png`` -> the matching label path."""
    match = _IMAGE_NAME.fullmatch(image.name)
    if match is None or image.parent.parent.name != "camera":
        raise ValueError(f"not an A2D2 camera image path: {image}")
    name = f"{match['ts']}_label_{match['cam']}_{match['id']}.png"
    return image.parent.parent.parent / "label" / image.parent.name / name


class A2D2:
    """A2D2 frames with colour labels decoded to class ids.

    Args:
        root: folder holding ``class_list.json`` and the scene folders.
        splits: A2D2 has no official split: only ``("all",)``.
        sequences: keep only these scenes (folder names; ``None``: all).
        files: keep only these image stems.
        fraction: keep this part of each scene (see :mod:`moe_perception.data.splits`).
        cameras: keep only these camera folders (e.g. ``cam_front_center``).
        mapping: ``paper38`` or ``coarse``.

    Raises:
        FileNotFoundError: no class list, or an image without its label.
        ValueError: an unknown split or mapping, or an empty selection.
    """

    def __init__(
        self,
        root: str | Path,
        splits: Sequence[str] = ("all",),
        sequences: Sequence[str] | None = None,
        files: Sequence[str] | None = None,
        fraction: Sequence[float] | None = None,
        cameras: Sequence[str] | None = None,
        mapping: A2D2Mapping = "paper38",
    ) -> None:
        self.root = Path(root)
        if tuple(splits) != ("all",):
            raise ValueError(
                f"A2D2 has no official splits (got {list(splits)}): use splits: [all] and "
                "select scenes (sequences), files or a fraction"
            )
        self.mapping = mapping
        class_list = read_class_list(self.root / "class_list.json")
        self.table = color_table(class_list, mapping)
        if mapping == "paper38":
            self.classes = A2D2_CATEGORIES
            first: dict[int, tuple[int, int, int]] = {}
            for code, class_id in sorted(self.table.items(), key=lambda kv: kv[0]):
                first.setdefault(class_id, ((code >> 16) & 255, (code >> 8) & 255, code & 255))
            self.colors = tuple(first.get(i, (0, 0, 0)) for i in range(len(A2D2_CATEGORIES)))
        else:
            self.classes = A2D2_COARSE_CLASSES
            self.colors = A2D2_COARSE_COLORS
        wanted = None if files is None else {Path(f).stem for f in files}
        items: list[tuple[Path, Path, str]] = []
        for image in sorted(self.root.glob("*/camera/cam_*/*.png")):
            scene = image.parent.parent.parent.name
            if sequences is not None and scene not in sequences:
                continue
            if cameras is not None and image.parent.name not in cameras:
                continue
            if wanted is not None and image.stem not in wanted:
                continue
            label = a2d2_label_path(image)
            if not label.is_file():
                raise FileNotFoundError(f"A2D2 label missing for {image}: {label}")
            items.append((image, label, scene))
        self.items = select_fraction(items, lambda i: i[2], lambda i: i[0].name, fraction)
        if not self.items:
            raise ValueError(
                f"no A2D2 frames in {self.root} for scenes={sequences}, cameras={cameras}, "
                f"files={'given' if files else None}, fraction={fraction}"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> SegmentationSample:
        image_path, label_path, _ = self.items[index]
        label = decode_color_label(read_rgb(label_path), self.table)
        return SegmentationSample(read_rgb(image_path), label, image_path.stem)

    def sequence_of(self, index: int) -> str:
        return self.items[index][2]
