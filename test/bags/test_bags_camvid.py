"""camvid-to-bag, and the shipped demo sample bag it made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moe_perception.bags.bagfile import BagFormat
from moe_perception.bags.camvid import (
    CamvidBagOptions,
    SequenceSpan,
    camvid_to_bag,
    parse_spans,
)
from moe_perception.bags.messages import image_to_numpy
from moe_perception.data import CAMVID_CLASSES, read_mask, read_rgb

SAMPLE = Path(__file__).resolve().parents[2] / "moe_perception" / "ros" / "sample" / "camvid_demo"
SAMPLE_FRAMES = [f"Seq05VD_f0{2310 + 30 * i}" for i in range(6)] + [
    f"0001TP_00{8550 + 30 * i}" for i in range(6)
]


def test_span_parsing() -> None:
    assert SequenceSpan.parse("Seq05VD") == SequenceSpan("Seq05VD", 0, None)
    assert SequenceSpan.parse("Seq05VD:77") == SequenceSpan("Seq05VD", 77, None)
    assert SequenceSpan.parse("0001TP:0:6") == SequenceSpan("0001TP", 0, 6)
    for bad in ("", ":1", "a:b", "a:1:0", "a:-1", "a:1:2:3"):
        with pytest.raises(ValueError, match="sequence"):
            SequenceSpan.parse(bad)


def test_camvid_frames_in_file_name_order(camvid_root: Path, bags: Any, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    options = CamvidBagOptions(
        sequences=parse_spans(["0001TP:2:2", "Seq05VD:0:1"]),
        start_time_s=100.5,
        period_s=0.5,
        bag_format=BagFormat(compression="none"),
    )
    summary = camvid_to_bag(camvid_root, out, options, progress=False)
    assert summary.counts == {"/camera/image_raw": 3, "/camera/labels": 3}
    messages = bags.read(out)
    names = ["0001TP_008610", "0001TP_008640", "Seq05VD_f00000"]
    images = [m for m in messages if m.topic == "/camera/image_raw"]
    labels = [m for m in messages if m.topic == "/camera/labels"]
    stamps = [100_500_000_000, 101_000_000_000, 101_500_000_000]
    assert [m.log_time for m in images] == stamps
    assert [m.log_time for m in labels] == stamps
    for image, label, name in zip(images, labels, names):
        assert image.msg.header.frame_id == "camera_optical_frame"
        assert (image.msg.encoding, label.msg.encoding) == ("rgb8", "mono8")
        np.testing.assert_array_equal(
            image_to_numpy(image.msg), read_rgb(camvid_root / "test" / f"{name}.png")
        )
        raw = read_mask(camvid_root / "testannot" / f"{name}.png")
        expected = np.where(raw >= 11, 255, raw)
        np.testing.assert_array_equal(image_to_numpy(label.msg), expected)
    metadata = bags.metadata(out)
    assert json.loads(metadata["custom_data"]["moe_perception.label_classes"]) == {
        "/camera/labels": list(CAMVID_CLASSES)
    }


def test_span_past_the_end_is_refused(camvid_root: Path, bags: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="0001TP in .* has 62 frames; asked for frames 60..62"):
        camvid_to_bag(
            camvid_root, tmp_path / "cv", CamvidBagOptions(sequences=parse_spans(["0001TP:60:3"]))
        )
    with pytest.raises(ValueError, match="sequence 'Nope' has no frames"):
        camvid_to_bag(
            camvid_root, tmp_path / "cv", CamvidBagOptions(sequences=parse_spans(["Nope"]))
        )
    assert not (tmp_path / "cv").exists()
    assert bags.leftovers(tmp_path) == []


def test_sample_bag(bags: Any) -> None:
    """The shipped demo sample: 12 CamVid frames with labels, small, metadata version 8."""
    metadata = bags.metadata(SAMPLE)
    assert metadata["version"] == 8
    assert metadata["storage_identifier"] == "mcap"
    counts = {
        t["topic_metadata"]["name"]: t["message_count"]
        for t in metadata["topics_with_message_count"]
    }
    assert counts == {"/camera/image_raw": 12, "/camera/labels": 12}
    size = sum(p.stat().st_size for p in SAMPLE.iterdir())
    assert size < 6_000_000
    messages = bags.read(SAMPLE)
    stamps = [m.log_time for m in messages if m.topic == "/camera/image_raw"]
    assert stamps == [1_700_000_000_000_000_000 + i * 1_000_000_000 for i in range(12)]
    for message in messages:
        assert message.msg.header.frame_id == "camera_optical_frame"
        assert (message.msg.width, message.msg.height) == (480, 360)
        assert message.msg.encoding == (
            "rgb8" if message.topic == "/camera/image_raw" else "mono8"
        )
    assert (SAMPLE.parent / "ATTRIBUTION.md").is_file()


def test_sample_bag_holds_the_documented_frames(camvid_root: Path, bags: Any) -> None:
    messages = bags.read(SAMPLE)
    images = [image_to_numpy(m.msg) for m in messages if m.topic == "/camera/image_raw"]
    labels = [image_to_numpy(m.msg) for m in messages if m.topic == "/camera/labels"]
    for image, label, name in zip(images, labels, SAMPLE_FRAMES, strict=True):
        np.testing.assert_array_equal(image, read_rgb(camvid_root / "test" / f"{name}.png"))
        raw = read_mask(camvid_root / "testannot" / f"{name}.png")
        np.testing.assert_array_equal(label, np.where(raw >= 11, 255, raw))
