"""a2d2-to-bag on a tiny A2D2-layout tree written by the test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moe_perception.bags import convert
from moe_perception.bags.a2d2 import A2D2BagOptions, a2d2_to_bag, color_label_to_ids
from moe_perception.bags.bagfile import BagFormat
from moe_perception.bags.messages import image_to_numpy
from moe_perception.data.a2d2 import A2D2_CATEGORIES, A2D2_COARSE_CLASSES

# The categories of the tree's class_list.json entries, in file order.
PAPER38_OF_COLORS = ("Car", "Car", "Pedestrian", "RD normal street", "Sky")
COARSE_OF_COLORS = ("vehicle", "vehicle", "pedestrian", "road", "sky")


def test_bag_holds_every_frame_in_time_order(a2d2_tree: Any, bags: Any, tmp_path: Path) -> None:
    out = tmp_path / "a2d2_bag"
    summary = a2d2_to_bag(a2d2_tree.root, out, A2D2BagOptions(), progress=False)
    topics = {
        f"/cam_{camera}/{kind}"
        for camera in ("front_center", "side_left")
        for kind in ("image_raw", "camera_info", "labels")
    }
    assert summary.counts == dict.fromkeys(topics, 4)
    bag = bags.read(out)
    assert len(bag) == 24
    images = [m for m in bag if m.topic.endswith("/image_raw")]
    expected = sorted(a2d2_tree.frames, key=lambda f: f.cam_tstamp_us)
    # Time order across scenes and cameras (the later-named scene comes first).
    assert [m.log_time for m in images] == [f.cam_tstamp_us * 1000 for f in expected]
    assert [m.log_time for m in bag] == sorted(m.log_time for m in bag)
    for message, frame in zip(images, expected):
        assert message.topic == f"/cam_{frame.camera}/image_raw"
        assert message.msg.encoding == "rgb8"
        assert message.msg.header.frame_id == f"cam_{frame.camera}_optical_frame"
        stamp = message.msg.header.stamp
        assert stamp.sec * 10**9 + stamp.nanosec == frame.cam_tstamp_us * 1000
        np.testing.assert_array_equal(image_to_numpy(message.msg), frame.image)
    labels = [m for m in bag if m.topic.endswith("/labels")]
    # class_list.json order: Car 1, Car 2, Pedestrian 1, RD normal street, Sky -> the
    # 38 categories of moe_perception.data.a2d2.
    paper38 = np.array([A2D2_CATEGORIES.index(name) for name in PAPER38_OF_COLORS], np.uint8)
    for message, frame in zip(labels, expected):
        assert message.msg.encoding == "mono8"
        assert message.log_time == frame.cam_tstamp_us * 1000
        assert message.topic == f"/cam_{frame.camera}/labels"
        assert message.msg.header.frame_id == f"cam_{frame.camera}_optical_frame"
        np.testing.assert_array_equal(image_to_numpy(message.msg), paper38[frame.label_ids])
    metadata = bags.metadata(out)
    assert metadata["version"] == 8
    assert metadata["storage_identifier"] == "mcap"
    assert metadata["message_count"] == 24
    recorded = json.loads(metadata["custom_data"]["moe_perception.label_classes"])
    assert recorded == {
        "/cam_front_center/labels": list(A2D2_CATEGORIES),
        "/cam_side_left/labels": list(A2D2_CATEGORIES),
    }
    assert bags.leftovers(tmp_path) == []


def test_camera_info_values(a2d2_tree: Any, bags: Any, tmp_path: Path) -> None:
    out = tmp_path / "bag"
    a2d2_to_bag(a2d2_tree.root, out, A2D2BagOptions(), progress=False)
    infos = {m.topic: m.msg for m in bags.read(out) if m.topic.endswith("/camera_info")}
    cameras = a2d2_tree.config["cameras"]
    front = infos["/cam_front_center/camera_info"]
    assert (front.width, front.height) == (24, 16)
    assert front.distortion_model == "plumb_bob"
    assert front.d.tolist() == cameras["front_center"]["Distortion"][0]
    assert front.k.tolist() == [1000.0, 0.0, 12.5, 0.0, 990.0, 8.25, 0.0, 0.0, 1.0]
    assert cameras["front_center"]["CamMatrixOriginal"] == [
        [1000.0, 0.0, 12.5],
        [0.0, 990.0, 8.25],
        [0.0, 0.0, 1.0],
    ]
    assert front.r.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert front.p.tolist() == [1000.0, 0.0, 12.5, 0.0, 0.0, 990.0, 8.25, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert front.header.frame_id == "cam_front_center_optical_frame"
    side = infos["/cam_side_left/camera_info"]
    assert (side.width, side.height) == (20, 12)
    assert side.distortion_model == "equidistant"
    assert side.d.tolist() == cameras["side_left"]["Distortion"][0]
    # Configured for 40x24, the images are 20x12: fx, cx, fy, cy halve.
    assert side.k.tolist() == [150.0, 0.0, 10.0, 0.0, 155.0, 6.0, 0.0, 0.0, 1.0]
    assert cameras["side_left"]["CamMatrixOriginal"][0] == [300.0, 0.0, 20.0]
    assert cameras["side_left"]["Resolution"] == [40, 24]


def test_options_select_scenes_cameras_and_shift_tai(
    a2d2_tree: Any, bags: Any, tmp_path: Path
) -> None:
    out = tmp_path / "bag"
    options = A2D2BagOptions(
        scenes=("20180807_145028",),
        cameras=("cam_side_left",),
        tai_to_utc=True,
        camera_info=False,
        namespace="/a2d2",
        frame_prefix="car/",
        bag_format=BagFormat(storage="sqlite3", version=9),
    )
    summary = a2d2_to_bag(a2d2_tree.root, out, options, progress=False)
    assert summary.counts == {"/a2d2/cam_side_left/image_raw": 2, "/a2d2/cam_side_left/labels": 2}
    expected = [
        f.cam_tstamp_us * 1000 - 37 * 10**9
        for f in a2d2_tree.frames
        if f.scene == "20180807_145028" and f.camera == "side_left"
    ]
    bag = bags.read(out)
    assert [m.log_time for m in bag if m.topic.endswith("image_raw")] == expected
    assert {m.msg.header.frame_id for m in bag} == {"car/cam_side_left_optical_frame"}
    metadata = bags.metadata(out)
    assert (metadata["storage_identifier"], metadata["version"]) == ("sqlite3", 9)


@pytest.mark.parametrize("label_ids", ["colors", "coarse"])
def test_other_label_ids(a2d2_tree: Any, bags: Any, tmp_path: Path, label_ids: str) -> None:
    out = tmp_path / "bag"
    options = A2D2BagOptions(cameras=("front_center",), camera_info=False, label_ids=label_ids)
    a2d2_to_bag(a2d2_tree.root, out, options, progress=False)
    if label_ids == "colors":
        # The index of the colour in class_list.json.
        lookup = np.arange(5, dtype=np.uint8)
        names = list(a2d2_tree.classes.values())
    else:
        lookup = np.array([A2D2_COARSE_CLASSES.index(n) for n in COARSE_OF_COLORS], np.uint8)
        names = list(A2D2_COARSE_CLASSES)
    frames = sorted(
        (f for f in a2d2_tree.frames if f.camera == "front_center"), key=lambda f: f.cam_tstamp_us
    )
    labels = [m.msg for m in bags.read(out) if m.topic == "/cam_front_center/labels"]
    assert len(labels) == len(frames) == 4
    for label, frame in zip(labels, frames):
        np.testing.assert_array_equal(image_to_numpy(label), lookup[frame.label_ids])
    recorded = json.loads(bags.metadata(out)["custom_data"]["moe_perception.label_classes"])
    assert recorded == {"/cam_front_center/labels": names}


def test_refuses_to_overwrite(a2d2_tree: Any, bags: Any, tmp_path: Path) -> None:
    out = tmp_path / "bag"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists already"):
        a2d2_to_bag(a2d2_tree.root, out, A2D2BagOptions(), progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"


def test_interrupted_conversion_leaves_no_bag(
    a2d2_tree: Any, bags: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = convert.read_image_file
    calls = []

    def interrupt_on_fifth(path: Path) -> np.ndarray:
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(convert, "read_image_file", interrupt_on_fifth)
    out = tmp_path / "bag"
    with pytest.raises(KeyboardInterrupt):
        a2d2_to_bag(a2d2_tree.root, out, A2D2BagOptions(camera_info=False, labels=False))
    assert len(calls) == 5
    assert not out.exists()
    assert bags.leftovers(tmp_path) == []


def _corrupt(tree: Any, what: str) -> Path:
    frame = tree.frames[3]
    label = (
        frame.image_path.parents[2]
        / "label"
        / frame.image_path.parent.name
        / frame.image_path.name.replace("_camera_", "_label_")
    )
    if what == "missing json":
        path = frame.image_path.with_suffix(".json")
        path.unlink()
    elif what == "bad json":
        path = frame.image_path.with_suffix(".json")
        path.write_text("{cam_tstamp: ")
    elif what == "no stamp":
        path = frame.image_path.with_suffix(".json")
        path.write_text(json.dumps({"cam_name": "front_center"}))
    elif what == "missing label":
        path = label
        path.unlink()
    elif what == "truncated image":
        path = frame.image_path
        path.write_bytes(path.read_bytes()[:40])
    elif what == "bad class list":
        path = tree.root / "class_list.json"
        path.write_text(json.dumps(["Car 1"]))
    elif what == "bad sensor config":
        path = tree.root / "cams_lidars.json"
        config = json.loads(path.read_text())
        del config["cameras"]["side_left"]["Lens"]
        path.write_text(json.dumps(config))
    elif what == "unknown colour":
        from PIL import Image

        path = label
        rgb = np.asarray(Image.open(path)).copy()
        rgb[0, 0] = (1, 2, 3)
        Image.fromarray(rgb).save(path)
    else:
        raise AssertionError(what)
    return path


@pytest.mark.parametrize(
    ("what", "error", "extra"),
    [
        ("missing json", FileNotFoundError, "file missing"),
        ("bad json", ValueError, "malformed JSON"),
        ("no stamp", ValueError, "cam_tstamp"),
        ("missing label", FileNotFoundError, "label missing"),
        ("truncated image", ValueError, "cannot decode image"),
        ("bad class list", ValueError, "#rrggbb"),
        ("bad sensor config", ValueError, "camera 'side_left'"),
        ("unknown colour", ValueError, "#010203 \\(1 px\\)"),
    ],
)
def test_bad_input_names_the_file(
    a2d2_tree: Any, bags: Any, tmp_path: Path, what: str, error: type[Exception], extra: str
) -> None:
    path = _corrupt(a2d2_tree, what)
    out = tmp_path / "bag"
    with pytest.raises(error, match=extra) as caught:
        a2d2_to_bag(a2d2_tree.root, out, A2D2BagOptions(), progress=False)
    assert str(path) in str(caught.value)
    assert not out.exists()
    assert bags.leftovers(tmp_path) == []


def test_unknown_scene_or_camera_is_refused(a2d2_tree: Any, bags: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scenes not found.*nowhere"):
        a2d2_to_bag(a2d2_tree.root, tmp_path / "a", A2D2BagOptions(scenes=("nowhere",)))
    with pytest.raises(ValueError, match="cameras not found.*rear_center"):
        a2d2_to_bag(a2d2_tree.root, tmp_path / "b", A2D2BagOptions(cameras=("rear_center",)))


def test_color_label_to_ids_maps_by_class_list_order() -> None:
    colors = np.array([[255, 0, 0], [0, 0, 255], [0, 255, 0]], dtype=np.uint8)
    rgb = colors[np.array([[2, 0], [1, 2]])]
    ids = color_label_to_ids(rgb, colors, Path("label.png"))
    assert ids.dtype == np.uint8
    assert ids.tolist() == [[2, 0], [1, 2]]
