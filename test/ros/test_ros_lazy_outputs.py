"""Outputs nobody subscribes to are not computed; the gate-entropy scalar always is.

The node runs in this process (spun in a thread, its own context) so the test can see
which maps it asks the segmenter for; frames still travel over DDS.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e '.[ros]')")

import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from moe_perception.render import output_topic  # noqa: E402
from moe_perception.ros.node import SegmenterNode  # noqa: E402

if TYPE_CHECKING:
    from conftest import Probe  # test/ros/conftest.py

pytestmark = pytest.mark.slow

TOPIC = "/cam_lazy/image_raw"


class RecordingSegmenter:
    """Forwards to the node's segmenter and records the maps each call asks for."""

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter
        self.requested: list[list[str]] = []

    def __call__(self, images: Any, maps: Any, resolution: str) -> Any:
        self.requested.append(list(maps))
        return self.segmenter(images, maps=maps, resolution=resolution)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.segmenter, name)


@pytest.fixture(scope="module")
def lazy_node(tiny_checkpoint: Path) -> Iterator[tuple[SegmenterNode, RecordingSegmenter]]:
    context = Context()
    rclpy.init(context=context)
    node = SegmenterNode(
        "lazy_segmenter",
        namespace="/lazy_test",
        context=context,
        parameter_overrides=[
            Parameter("model_path", value=str(tiny_checkpoint)),
            Parameter("device", value="cpu"),
            Parameter("image_topics", value=[TOPIC]),
            Parameter("input_reliability", value="reliable"),
        ],
    )
    recorder = RecordingSegmenter(node._segmenter)
    node._segmenter = recorder
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        while spinning.is_set() and context.ok():
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    yield node, recorder
    spinning.clear()
    thread.join(timeout=10)
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def send_until(probe: Probe, publisher: Any, topic: str, count: int) -> None:
    """Publish fresh frames until ``topic`` has more than ``count`` messages."""
    for _ in range(60):
        frame = np.zeros((20, 30, 3), dtype=np.uint8)
        publisher.publish(probe.image_message(frame, probe.node.get_clock().now().to_msg()))
        try:
            probe.wait_for(lambda: len(probe.messages[topic]) > count, topic, timeout=1.0)
            return
        except AssertionError:
            continue
    raise AssertionError(f"no message on {topic}")


def test_only_subscribed_maps_are_computed(
    lazy_node: tuple[SegmenterNode, RecordingSegmenter], probe: Probe
) -> None:
    node, recorder = lazy_node
    publisher = probe.node.create_publisher(
        Image, TOPIC, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    gate_entropy = output_topic(TOPIC, "gate_entropy")
    probe.subscribe(Float32, gate_entropy)
    # Nobody subscribes to an image output: no map is computed, the scalar still arrives.
    send_until(probe, publisher, gate_entropy, 0)
    assert recorder.requested[-1] == []

    variance = output_topic(TOPIC, "uncertainty/expert_variance")
    probe.subscribe(Image, variance)
    probe.wait_for(lambda: node.count_subscribers(variance) > 0, "the node to see the subscriber")
    send_until(probe, publisher, variance, 0)
    # Only the subscribed map: confidence and uncertainty_color have no subscriber.
    assert recorder.requested[-1] == ["expert_variance"]
    assert probe.messages[variance][-1].encoding == "32FC1"

    confidence = output_topic(TOPIC, "confidence")
    probe.subscribe(Image, confidence)
    probe.wait_for(lambda: node.count_subscribers(confidence) > 0, "the node to see it")
    send_until(probe, publisher, confidence, 0)
    # Now the map behind confidence (confidence_map: predictive_entropy) is needed too.
    assert recorder.requested[-1] == ["predictive_entropy", "expert_variance"]
