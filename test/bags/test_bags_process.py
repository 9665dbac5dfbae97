"""process-bag: the node's outputs, offline, and the evaluation against label topics."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moe_perception import render
from moe_perception.bags import messages
from moe_perception.bags.bagfile import BagFormat, label_classes_custom_data, open_bag_writer
from moe_perception.bags.process import ProcessOptions, process_bag
from moe_perception.data import CAMVID_CLASSES
from moe_perception.render import IMAGE_OUTPUTS, frame_outputs, output_topic, palette_lut
from moe_perception.segmenter import Segmenter

T0 = 1_600_000_000_000_000_000
STEP = 100_000_000


def _png(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def write_input_bag(path: Path, label_classes: tuple[str, ...] = CAMVID_CLASSES) -> dict:
    """A small bag: a camera with labels (for 2 of its 3 frames), a compressed camera,
    a depth image and a CameraInfo. Returns the images and labels written."""
    rng = np.random.default_rng(1)
    store = messages.typestore()
    frames: dict[str, list] = {"a": [], "b": [], "labels": []}
    custom = label_classes_custom_data({"/cam_a/labels": label_classes})
    with open_bag_writer(path, BagFormat(), custom) as writer:
        add = writer.add_connection
        image_a = add("/cam_a/image_raw", "sensor_msgs/msg/Image", typestore=store)
        labels_a = add("/cam_a/labels", "sensor_msgs/msg/Image", typestore=store)
        info_a = add("/cam_a/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        image_b = add(
            "/cam_b/image_raw/compressed", "sensor_msgs/msg/CompressedImage", typestore=store
        )
        depth_b = add("/cam_b/depth", "sensor_msgs/msg/Image", typestore=store)
        for i in range(3):
            stamp = T0 + i * STEP
            header = messages.make_header(stamp, "cam_a_optical_frame")
            rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
            writer.write(
                image_a, stamp, messages.serialize(messages.numpy_to_image(rgb, "rgb8", header))
            )
            frames["a"].append((stamp, rgb))
            info = messages.make_camera_info(header, 48, 32, np.eye(3), [0.0] * 5, "plumb_bob")
            writer.write(info_a, stamp, messages.serialize(info))
            if i != 1:
                label = rng.integers(0, len(label_classes), (32, 48), dtype=np.uint8)
                label[0, :5] = 255  # void pixels are not scored
                label_msg = messages.numpy_to_image(label, "mono8", header)
                # Logged a little later than the image: matched on the header stamp.
                writer.write(labels_a, stamp + 1000, messages.serialize(label_msg))
                frames["labels"].append((stamp, label))
        for i in range(2):
            stamp = T0 + i * STEP + 50_000_000
            header = messages.make_header(stamp, "cam_b_optical_frame")
            rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            compressed = store.types["sensor_msgs/msg/CompressedImage"](
                header=header, format="png", data=_png(rgb)
            )
            writer.write(image_b, stamp, messages.serialize(compressed))
            frames["b"].append((stamp, rgb))
            depth = messages.numpy_to_image(np.full((20, 30), 2.5, np.float32), "32FC1", header)
            writer.write(depth_b, stamp, messages.serialize(depth))
    return frames


@pytest.fixture
def input_bag(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "in"
    return path, write_input_bag(path)


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint: Path) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")


def _options(tiny_checkpoint: Path, **kwargs: Any) -> ProcessOptions:
    return ProcessOptions(checkpoint=tiny_checkpoint, device="cpu", **kwargs)


def test_outputs_equal_the_nodes(
    input_bag: tuple[Path, dict],
    tiny_checkpoint: Path,
    segmenter: Segmenter,
    bags: Any,
    tmp_path: Path,
) -> None:
    path, frames = input_bag
    out = tmp_path / "out"
    report = process_bag(path, out, _options(tiny_checkpoint), progress=False)
    assert report.frames == {"/cam_a/image_raw": 3, "/cam_b/image_raw/compressed": 2}
    written = bags.read(out)
    by_topic: dict[str, list] = {}
    for message in written:
        by_topic.setdefault(message.topic, []).append(message)
    palette = palette_lut(segmenter.metadata.class_colors)
    for topic, frame_id, key in (
        ("/cam_a/image_raw", "cam_a_optical_frame", "a"),
        ("/cam_b/image_raw/compressed", "cam_b_optical_frame", "b"),
    ):
        for index, (stamp, rgb) in enumerate(frames[key]):
            segmentation = segmenter(rgb)
            # What the node publishes for this frame.
            expected = frame_outputs(rgb, segmentation, palette)
            for name in IMAGE_OUTPUTS:
                message = by_topic[output_topic(topic, name)][index]
                assert message.msgtype == "sensor_msgs/msg/Image"
                assert message.log_time == stamp
                assert messages.header_stamp_ns(message.msg.header) == stamp
                assert message.msg.header.frame_id == frame_id
                encoding = {"labels": "mono8", "confidence": "mono8"}.get(
                    name, "32FC1" if name.startswith("uncertainty/") else "rgb8"
                )
                assert message.msg.encoding == encoding
                np.testing.assert_array_equal(messages.image_to_numpy(message.msg), expected[name])
            entropy = by_topic[output_topic(topic, "gate_entropy")][index]
            assert entropy.msgtype == "std_msgs/msg/Float32"
            assert entropy.msg.data == np.float32(segmentation.gate_entropy)
            weights = by_topic[output_topic(topic, "gate_weights")][index]
            assert weights.msgtype == "std_msgs/msg/Float32MultiArray"
            assert weights.msg.layout.dim[0].label == "experts:daylight,dusk"
            assert (weights.msg.layout.dim[0].size, weights.msg.layout.dim[0].stride) == (2, 2)
            np.testing.assert_array_equal(weights.msg.data, segmentation.gate_weights)
    assert output_topic("/cam_a/image_raw", "overlay") == "/cam_a/segmentation/overlay"
    # Inputs are copied unchanged, the depth image too (it is not segmented).
    assert [m.log_time for m in by_topic["/cam_b/depth"]] == [T0 + 50_000_000, T0 + 150_000_000]
    assert len(by_topic["/cam_a/camera_info"]) == 3
    assert len(by_topic["/cam_a/labels"]) == 2
    assert "/cam_b/segmentation/labels" in by_topic
    assert not any(t.startswith("/cam_b/depth/") for t in by_topic)
    assert bags.metadata(out)["version"] == 8


def test_metrics_per_frame_and_overall(
    input_bag: tuple[Path, dict],
    tiny_checkpoint: Path,
    segmenter: Segmenter,
    tmp_path: Path,
) -> None:
    from moe_perception.metrics.segmentation import ConfusionMatrix

    path, frames = input_bag
    out = tmp_path / "out"
    report = process_bag(path, out, _options(tiny_checkpoint), progress=False, segmenter=segmenter)
    metrics = json.loads((out / "metrics.json").read_text())
    assert report.metrics == metrics
    camera = metrics["cameras"]["/cam_a/image_raw"]
    assert camera["label_topic"] == "/cam_a/labels"
    images = dict(frames["a"])
    overall = ConfusionMatrix(len(CAMVID_CLASSES))
    assert [f["stamp_ns"] for f in camera["per_frame"]] == [T0, T0 + 2 * STEP]
    for scored, (stamp, label) in zip(camera["per_frame"], frames["labels"], strict=True):
        import torch

        predicted = torch.from_numpy(segmenter(images[stamp]).labels)
        one = ConfusionMatrix(len(CAMVID_CLASSES))
        one.update(predicted, torch.from_numpy(label))
        overall.update(predicted, torch.from_numpy(label))
        assert scored["miou"] == pytest.approx(one.miou(), abs=1e-12)
        assert scored["pixel_accuracy"] == pytest.approx(one.pixel_accuracy(), abs=1e-12)
        assert scored["labelled_pixels"] == 32 * 48 - 5
    assert camera["frames"] == 2
    assert camera["miou"] == pytest.approx(overall.miou(), abs=1e-12)
    assert camera["pixel_accuracy"] == pytest.approx(overall.pixel_accuracy(), abs=1e-12)
    assert metrics["overall"]["miou"] == camera["miou"]
    assert metrics["overall"]["frames"] == 2
    assert list(camera["iou"]) == list(CAMVID_CLASSES)
    assert report.notes == (
        "/cam_a/image_raw: 1 frames without a label and 0 labels without a frame "
        "(matched on header stamp)",
    )


def test_labels_with_other_classes_are_not_scored(
    tiny_checkpoint: Path, segmenter: Segmenter, tmp_path: Path
) -> None:
    path = tmp_path / "in"
    write_input_bag(path, label_classes=("Car 1", "Car 2", "Sky"))
    out = tmp_path / "out"
    report = process_bag(
        path,
        out,
        _options(tiny_checkpoint, outputs=("labels",), copy_inputs=False),
        progress=False,
        segmenter=segmenter,
    )
    assert report.metrics is None
    assert not (out / "metrics.json").exists()
    assert report.notes[0].startswith("/cam_a/labels not scored: its 3 classes are not the")


def test_options_select_topics_and_outputs(
    input_bag: tuple[Path, dict],
    segmenter: Segmenter,
    tiny_checkpoint: Path,
    bags: Any,
    tmp_path: Path,
) -> None:
    path, _ = input_bag
    out = tmp_path / "out"
    options = _options(
        tiny_checkpoint,
        topics=("/cam_b/image_raw/compressed",),
        outputs=("overlay", "gate_weights"),
        copy_inputs=False,
        bag_format=BagFormat(storage="sqlite3"),
    )
    process_bag(path, out, options, progress=False, segmenter=segmenter)
    topics = {
        t["topic_metadata"]["name"]: t["message_count"]
        for t in bags.metadata(out)["topics_with_message_count"]
    }
    assert topics == {"/cam_b/segmentation/overlay": 2, "/cam_b/segmentation/gate_weights": 2}


def test_refusals(
    input_bag: tuple[Path, dict],
    segmenter: Segmenter,
    tiny_checkpoint: Path,
    bags: Any,
    tmp_path: Path,
) -> None:
    path, _ = input_bag
    with pytest.raises(FileExistsError, match="exists already"):
        process_bag(path, path, _options(tiny_checkpoint), segmenter=segmenter)
    with pytest.raises(FileNotFoundError, match="bag .*missing does not exist"):
        process_bag(tmp_path / "missing", tmp_path / "o1", _options(tiny_checkpoint))
    with pytest.raises(ValueError, match="topic /nope is not in bag"):
        process_bag(
            path,
            tmp_path / "o2",
            _options(tiny_checkpoint, topics=("/nope",)),
            segmenter=segmenter,
        )
    with pytest.raises(ValueError, match="unknown outputs \\['nope'\\]"):
        process_bag(
            path,
            tmp_path / "o3",
            _options(tiny_checkpoint, outputs=("nope",)),
            segmenter=segmenter,
        )
    # A processed bag already holds the outputs: copying its inputs would duplicate them.
    process_bag(
        path, tmp_path / "o4", _options(tiny_checkpoint, outputs=("labels",)), segmenter=segmenter
    )
    with pytest.raises(ValueError, match="already holds output topics"):
        process_bag(
            tmp_path / "o4",
            tmp_path / "o5",
            _options(tiny_checkpoint, topics=("/cam_a/image_raw",)),
            segmenter=segmenter,
        )
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o5"))
    assert bags.leftovers(tmp_path) == []


def test_interrupted_processing_leaves_no_bag(
    input_bag: tuple[Path, dict],
    segmenter: Segmenter,
    tiny_checkpoint: Path,
    bags: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, _ = input_bag
    real = render.frame_outputs
    calls = []

    def interrupt_on_second(*args: Any, **kwargs: Any) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(render, "frame_outputs", interrupt_on_second)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        process_bag(path, out, _options(tiny_checkpoint), segmenter=segmenter)
    assert len(calls) == 2
    assert not out.exists()
    assert bags.leftovers(tmp_path) == []


def test_sample_bag_is_scored(tiny_checkpoint: Path, segmenter: Segmenter, tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "moe_perception/ros/sample/camvid_demo"
    out = tmp_path / "out"
    options = _options(tiny_checkpoint, outputs=("labels",), copy_inputs=False)
    report = process_bag(sample, out, options, progress=False, segmenter=segmenter)
    assert report.frames == {"/camera/image_raw": 12}
    assert report.notes == ()
    camera = report.metrics["cameras"]["/camera/image_raw"]
    assert camera["frames"] == 12
    assert 0.0 <= camera["miou"] <= 1.0
    assert len(camera["per_frame"]) == 12
