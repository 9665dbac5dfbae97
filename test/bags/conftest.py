"""Fixtures of the bag tests: a tiny A2D2-layout tree written here, and bag reading.

The tests run with ``--import-mode=importlib``, so they reach these helpers through
fixtures only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# A few classes of A2D2's class_list.json (the real file has 55), in file order.
A2D2_CLASSES = {
    "#ff0000": "Car 1",
    "#c80000": "Car 2",
    "#cc99ff": "Pedestrian 1",
    "#ff00ff": "RD normal street",
    "#87ceff": "Sky",
}
SCENES = ("20180807_145028", "20181108_091945")
# camera -> (file-name camera token, image (width, height), Resolution in cams_lidars.json)
CAMERAS = {
    "front_center": ("frontcenter", (24, 16), (24, 16)),
    # Configured at twice the image size: K must be scaled by 1/2.
    "side_left": ("sideleft", (20, 12), (40, 24)),
}
FRONT_K = [[1000.0, 0.0, 12.5], [0.0, 990.0, 8.25], [0.0, 0.0, 1.0]]
FRONT_D = [-0.2, 0.05, 0.001, -0.002, 0.01]
SIDE_K = [[300.0, 0.0, 20.0], [0.0, 310.0, 12.0], [0.0, 0.0, 1.0]]
SIDE_D = [0.1, -0.02, 0.003, -0.0004]


@dataclass(frozen=True)
class A2D2Frame:
    """What the test tree holds for one image."""

    scene: str
    camera: str
    cam_tstamp_us: int
    image: np.ndarray
    label_ids: np.ndarray
    image_path: Path


@dataclass(frozen=True)
class A2D2Tree:
    """The tree: its root, its frames, and the values written into its JSON files."""

    root: Path
    frames: tuple[A2D2Frame, ...]
    classes: dict[str, str]
    config: dict[str, Any]


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def build_a2d2_tree(root: Path, seed: int = 0) -> A2D2Tree:
    """Two scenes x two cameras x two frames, colour labels and a sensor configuration.

    Stamps interleave the cameras, and the second scene was recorded *before* the first
    in time, so file order and time order differ.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "class_list.json").write_text(json.dumps(A2D2_CLASSES), encoding="utf-8")
    colors = np.array(
        [[int(k[i : i + 2], 16) for i in (1, 3, 5)] for k in A2D2_CLASSES], dtype=np.uint8
    )
    config = {
        "cameras": {
            "front_center": {
                "CamMatrix": FRONT_K,
                "CamMatrixOriginal": FRONT_K,
                "Distortion": [FRONT_D],
                "Resolution": list(CAMERAS["front_center"][2]),
                "Lens": "Telecam",
                "tstamp_delay": 0,
            },
            "side_left": {
                "CamMatrix": SIDE_K,
                "CamMatrixOriginal": SIDE_K,
                "Distortion": [SIDE_D],
                "Resolution": list(CAMERAS["side_left"][2]),
                "Lens": "Fisheye",
                "tstamp_delay": 0,
            },
        },
        "lidars": {},
        "vehicle": {},
    }
    (root / "cams_lidars.json").write_text(json.dumps(config), encoding="utf-8")
    # scene start times (us): the second scene is earlier
    starts = {SCENES[0]: 1_533_651_028_000_000, SCENES[1]: 1_533_000_000_000_000}
    frames = []
    for scene in SCENES:
        for camera_index, (camera, (token, (width, height), _)) in enumerate(CAMERAS.items()):
            for frame_index, frame_id in enumerate((91, 92)):
                stamp = starts[scene] + frame_index * 100_000 + camera_index * 30_000
                ids = rng.integers(0, len(A2D2_CLASSES), size=(height, width), dtype=np.uint8)
                image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
                ts = scene.replace("_", "")
                stem = f"{ts}_camera_{token}_{frame_id:09d}"
                image_path = root / scene / "camera" / f"cam_{camera}" / f"{stem}.png"
                _write_png(image_path, image)
                image_path.with_suffix(".json").write_text(
                    json.dumps({"cam_name": camera, "cam_tstamp": stamp}), encoding="utf-8"
                )
                label_name = f"{ts}_label_{token}_{frame_id:09d}.png"
                _write_png(root / scene / "label" / f"cam_{camera}" / label_name, colors[ids])
                frames.append(A2D2Frame(scene, camera, stamp, image, ids, image_path))
    return A2D2Tree(root, tuple(frames), dict(A2D2_CLASSES), config)


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time: int
    msg: Any


@pytest.fixture
def a2d2_tree(tmp_path: Path) -> A2D2Tree:
    """A tiny A2D2-layout tree (see :func:`build_a2d2_tree`)."""
    return build_a2d2_tree(tmp_path / "a2d2")


def read_bag(path: Path) -> list[BagMessage]:
    """Every message of a bag, deserialised, in bag order."""
    from rosbags.rosbag2 import Reader

    from moe_perception.bags import messages

    with Reader(path) as reader:
        return [
            BagMessage(c.topic, c.msgtype, t, messages.deserialize(d, c.msgtype))
            for c, t, d in reader.messages()
        ]


def read_metadata(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def leftovers(folder: Path) -> list[str]:
    """Hidden staging folders left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


@dataclass(frozen=True)
class BagTools:
    """Reading bags back, for the tests."""

    read: Callable[[Path], list[BagMessage]]
    metadata: Callable[[Path], dict[str, Any]]
    leftovers: Callable[[Path], list[str]]


@pytest.fixture(scope="session")
def bags() -> BagTools:
    return BagTools(read_bag, read_metadata, leftovers)
