"""A node on compressed input (JPEG, PNG) over real DDS, and corrupt compressed frames."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e '.[ros]')")

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from moe_perception.ros.codec import decode_compressed, image_view  # noqa: E402

if TYPE_CHECKING:
    from conftest import NodeProcess, OfflineSegmenter, Probe  # test/ros/conftest.py

pytestmark = pytest.mark.slow

TOPIC = "/cam_jpeg/image_raw"
NODE_NAME = "test_compressed_segmenter"
RNG = np.random.default_rng(11)


def encoded(rgb: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format=fmt)
    return buffer.getvalue()


class CompressedHarness:
    def __init__(self, node: NodeProcess, probe: Probe, offline: OfflineSegmenter) -> None:
        self.node, self.probe, self.offline = node, probe, offline
        self.publisher = probe.node.create_publisher(
            CompressedImage,
            f"{TOPIC}/compressed",
            QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE),
        )

    def message(self, data: bytes, fmt: str) -> CompressedImage:
        message = CompressedImage(format=fmt, data=data)
        message.header.stamp = self.probe.node.get_clock().now().to_msg()
        message.header.frame_id = "jpeg_camera"
        return message

    def send(self, message: CompressedImage) -> dict[str, Any]:
        return self.probe.collect(self.node, self.publisher, message, TOPIC)

    def rejected(self) -> int:
        status = self.probe.diagnostics.get(f"{NODE_NAME}: {TOPIC}/compressed", {})
        return int(status.get("messages rejected", -1))


@pytest.fixture(scope="module")
def compressed(
    tiny_checkpoint: Path,
    probe: Probe,
    start_node: Callable[..., NodeProcess],
    offline: OfflineSegmenter,
) -> Iterator[CompressedHarness]:
    probe.subscribe_camera(TOPIC)
    parameters = {
        "model_path": str(tiny_checkpoint),
        "device": "cpu",
        "cpu_threads": 1,  # as the offline segmenter
        "image_topics": [TOPIC],
        "input_transport": "compressed",
        "input_reliability": "reliable",
        "input_depth": 1000,
        "diagnostics_period": 0.2,
    }
    # A namespace of its own, so its class_info is not the other test node's.
    node = start_node(parameters, NODE_NAME, namespace="/compressed_test")
    probe.wait_until_ready(node)
    yield CompressedHarness(node, probe, offline)
    assert node.stop() == 0 and "Traceback" not in node.log, node.log[-3000:]


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_frames_are_segmented_like_offline(
    compressed: CompressedHarness, fmt: str
) -> None:
    rgb = RNG.integers(0, 256, (36, 52, 3), dtype=np.uint8)
    data = encoded(rgb, fmt.upper())
    message = compressed.message(data, fmt if fmt == "png" else "bgr8; jpeg compressed bgr8")
    outputs = compressed.send(message)
    labels = outputs["labels"]
    assert labels.header.frame_id == "jpeg_camera" and labels.header.stamp == message.header.stamp
    assert (labels.height, labels.width) == (36, 52)
    # The node sees exactly the decoded pixels (lossless for PNG).
    pixels = decode_compressed(message)
    if fmt == "png":
        np.testing.assert_array_equal(pixels, rgb)
    np.testing.assert_array_equal(image_view(labels), compressed.offline(pixels).labels)


@st.composite
def corrupt_compressed(draw: st.DrawFn) -> tuple[bytes, str]:
    fmt = draw(st.sampled_from(["jpeg", "png", "", "tiff", "rgb8; jpeg compressed bgr8"]))
    good = encoded(
        RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8), "PNG" if fmt == "png" else "JPEG"
    )
    # Independent of the format's length, so every draw has the same bounds.
    cut = draw(st.integers(0, 10**6)) % len(good)
    noise = draw(st.binary(max_size=200))
    return good[:cut] + noise, fmt


def test_corrupt_compressed_frames_never_stop_the_node(compressed: CompressedHarness) -> None:
    sent = []

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(corrupt_compressed())
    def publish_corrupt(case: tuple[bytes, str]) -> None:
        message = compressed.message(*case)
        compressed.publisher.publish(message)
        sent.append(message)

    publish_corrupt()
    rgb = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    outputs = compressed.send(compressed.message(encoded(rgb, "PNG"), "png"))
    np.testing.assert_array_equal(image_view(outputs["labels"]), compressed.offline(rgb).labels)
    assert compressed.node.alive()
    assert compressed.probe.wait_for(lambda: compressed.rejected() > 0, "rejections") > 0
    errors = [line for line in compressed.node.log.splitlines() if "frame skipped" in line]
    assert errors and all(f"{TOPIC}/compressed" in line for line in errors)
