"""Dataset readers on tiny generated folders in each layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moe_perception.data import IGNORE_INDEX, open_dataset
from moe_perception.data.a2d2 import (
    A2D2,
    A2D2_CATEGORIES,
    A2D2_COARSE,
    A2D2_COARSE_CLASSES,
    a2d2_category,
    a2d2_label_path,
    decode_color_label,
)
from moe_perception.data.cityscapes import CITYSCAPES_TRAIN_IDS, Cityscapes, label_id_lut
from moe_perception.data.splits import select_fraction


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_camvid(root: Path, frames: dict[str, list[str]], size=(32, 48), seed=0) -> Path:
    """``frames``: split -> frame stems (``<sequence>_<number>``)."""
    rng = np.random.default_rng(seed)
    for split, stems in frames.items():
        for stem in stems:
            _save(root / split / f"{stem}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
            _save(
                root / f"{split}annot" / f"{stem}.png", rng.integers(0, 12, size, dtype=np.uint8)
            )
    return root


# -- CamVid ------------------------------------------------------------------------------


def test_camvid_void_sequences_and_fractions(tmp_path: Path) -> None:
    stems = [f"0006R0_f{i:03d}" for i in range(10)] + [f"0016E5_{i:05d}" for i in range(5)]
    root = make_camvid(tmp_path, {"train": stems})
    data = open_dataset("camvid", root, ["train"])
    assert len(data) == 15
    sample = data[0]
    assert sample.image.shape == (32, 48, 3) and sample.label.dtype == np.uint8
    raw = np.asarray(Image.open(root / "trainannot" / f"{sample.name}.png"))
    assert np.array_equal(sample.label == IGNORE_INDEX, raw == 11)  # void -> 255
    assert set(np.unique(sample.label)) <= set(range(11)) | {IGNORE_INDEX}
    head = open_dataset("camvid", root, ["train"], fraction=(0.0, 0.8))
    tail = open_dataset("camvid", root, ["train"], fraction=(0.8, 1.0))
    names_head = [p.stem for p, _ in head.items]
    names_tail = [p.stem for p, _ in tail.items]
    # 8 + 4 frames ahead, 2 + 1 behind: a partition, per sequence, in name order.
    assert len(names_head) == 12 and len(names_tail) == 3
    assert sorted(names_head + names_tail) == sorted(stems)
    assert names_tail == ["0006R0_f008", "0006R0_f009", "0016E5_00004"]
    only = open_dataset("camvid", root, ["train"], sequences=["0016E5"])
    assert {only.sequence_of(i) for i in range(len(only))} == {"0016E5"}
    picked = open_dataset("camvid", root, ["train"], files=["0006R0_f003.png"])
    assert [p.stem for p, _ in picked.items] == ["0006R0_f003"]
    with pytest.raises(ValueError, match="no CamVid frames"):
        open_dataset("camvid", root, ["train"], sequences=["Seq05VD"])
    with pytest.raises(ValueError, match="fraction"):
        open_dataset("camvid", root, ["train"], fraction=(0.5, 0.2))
    with pytest.raises(FileNotFoundError, match="val"):
        open_dataset("camvid", root, ["val"])
    with pytest.raises(ValueError, match="unknown dataset"):
        open_dataset("kitti", root, ["train"])  # type: ignore[arg-type]


def test_select_fraction_partitions() -> None:
    items = [("b", 2), ("a", 1), ("a", 3), ("b", 1), ("a", 2)]
    parts = [
        select_fraction(items, lambda i: i[0], lambda i: str(i[1]), f)
        for f in ((0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1))
    ]
    assert sorted(sum(parts, [])) == sorted(items)
    assert parts[0] == [("a", 1), ("b", 1)]


# -- A2D2 --------------------------------------------------------------------------------

CLASS_LIST = {
    "#ff0000": "Car 1",
    "#c80000": "Car 2",
    "#960000": "Car 3",
    "#800000": "Car 4",
    "#cc99ff": "Pedestrian 1",
    "#bd499b": "Pedestrian 2",
    "#87ceff": "Sky",
    "#ff00ff": "RD normal street",
    "#48d1cc": "Ego car",
}


def make_a2d2(root: Path, scenes=("20180807_145028", "20181108_091945"), frames=3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "class_list.json").write_text(json.dumps(CLASS_LIST))
    colors = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in CLASS_LIST]
    rng = np.random.default_rng(1)
    for scene in scenes:
        ts = scene.replace("_", "")
        for index in range(frames):
            image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
            label = np.array(colors, dtype=np.uint8)[rng.integers(0, len(colors), (32, 48))]
            label[0, 0] = (1, 2, 3)  # a colour class_list.json does not know
            cam = root / scene / "camera" / "cam_front_center"
            _save(cam / f"{ts}_camera_frontcenter_{index:09d}.png", image)
            (cam / f"{ts}_camera_frontcenter_{index:09d}.json").write_text('{"cam_tstamp": 1}')
            lab = root / scene / "label" / "cam_front_center"
            _save(lab / f"{ts}_label_frontcenter_{index:09d}.png", label)
    return root


def test_a2d2_categories() -> None:
    assert len(A2D2_CATEGORIES) == 38
    assert a2d2_category("Car 4") == "Car" and a2d2_category("Painted driv. instr.") == (
        "Painted driv. instr."
    )
    assert set(A2D2_COARSE) == set(A2D2_CATEGORIES)
    assert {v for v in A2D2_COARSE.values() if v} == set(A2D2_COARSE_CLASSES)


def test_a2d2_decoding(tmp_path: Path) -> None:
    root = make_a2d2(tmp_path / "a2d2")
    data = A2D2(root)
    assert len(data) == 6 and data.classes == A2D2_CATEGORIES
    sample = data[0]
    image_path, label_path, scene = data.items[0]
    assert label_path == a2d2_label_path(image_path) and data.sequence_of(0) == scene
    rgb = np.asarray(Image.open(label_path).convert("RGB"))
    assert sample.label[0, 0] == IGNORE_INDEX  # unknown colour: ignored, never a class
    car = A2D2_CATEGORIES.index("Car")
    for code, name in CLASS_LIST.items():
        color = np.array([int(code[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
        where = (rgb == color).all(-1)
        assert where.any()
        expected = A2D2_CATEGORIES.index(a2d2_category(name))
        assert (sample.label[where] == expected).all(), name
    # All four car colours are one class; the palette holds a real car colour.
    assert data.colors[car] in {(255, 0, 0), (200, 0, 0), (150, 0, 0), (128, 0, 0)}
    coarse = A2D2(root, mapping="coarse")[0]
    ego = (rgb == np.array([0x48, 0xD1, 0xCC], dtype=np.uint8)).all(-1)
    assert (coarse.label[ego] == IGNORE_INDEX).all()
    car_pixels = (rgb == np.array([200, 0, 0], dtype=np.uint8)).all(-1)
    assert (coarse.label[car_pixels] == A2D2_COARSE_CLASSES.index("vehicle")).all()
    assert len(A2D2(root, sequences=["20181108_091945"])) == 3
    assert len(A2D2(root, fraction=(0, 0.5))) == 4  # round(1.5) = 2 per scene


def test_a2d2_errors(tmp_path: Path) -> None:
    root = make_a2d2(tmp_path / "a2d2", frames=1)
    with pytest.raises(ValueError, match="no official splits"):
        A2D2(root, splits=("train",))
    with pytest.raises(ValueError, match="unknown A2D2 mapping"):
        A2D2(root, mapping="fine")  # type: ignore[arg-type]
    (root / "class_list.json").write_text(json.dumps({"#123456": "Spaceship 1"}))
    with pytest.raises(ValueError, match="class_list.json.*Spaceship"):
        A2D2(root)
    (root / "class_list.json").write_text(json.dumps({"red": "Sky"}))
    with pytest.raises(ValueError, match="rrggbb"):
        A2D2(root)
    (root / "class_list.json").unlink()
    with pytest.raises(FileNotFoundError, match="class_list.json"):
        A2D2(root)
    with pytest.raises(ValueError, match="RGB label"):
        decode_color_label(np.zeros((2, 2), np.uint8), {})


def test_a2d2_missing_label(tmp_path: Path) -> None:
    root = make_a2d2(tmp_path / "a2d2", frames=1)
    next(root.glob("*/label/*/*.png")).unlink()
    with pytest.raises(FileNotFoundError, match="A2D2 label missing"):
        A2D2(root)


# -- Cityscapes --------------------------------------------------------------------------


def make_cityscapes(root: Path) -> Path:
    rng = np.random.default_rng(2)
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt",))):
        for city in cities:
            for index in range(2):
                stem = f"{city}_{index:06d}_000019"
                _save(
                    root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                    rng.integers(0, 256, (32, 64, 3), dtype=np.uint8),
                )
                _save(
                    root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
                    rng.integers(0, 34, (32, 64), dtype=np.uint8),
                )
    return root


def test_cityscapes_train_ids(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs")
    data = Cityscapes(root, ["train"])
    assert len(data) == 4 and data.sequence_of(3) == "bochum"
    sample = data[0]
    raw = np.asarray(Image.open(data.items[0][1]))
    for label_id in np.unique(raw):
        expected = CITYSCAPES_TRAIN_IDS.get(int(label_id), IGNORE_INDEX)
        assert (sample.label[raw == label_id] == expected).all()
    assert sorted(set(label_id_lut().tolist()) - {255}) == list(range(19))
    assert len(open_dataset("cityscapes", root, ["train", "val"], sequences=["frankfurt"])) == 2
    with pytest.raises(ValueError, match="unknown Cityscapes split"):
        Cityscapes(root, ["extra"])
    next(root.glob("gtFine/val/*/*.png")).unlink()
    with pytest.raises(FileNotFoundError, match="Cityscapes label missing"):
        Cityscapes(root, ["val"])
