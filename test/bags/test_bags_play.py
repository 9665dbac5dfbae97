"""play over real DDS (localhost, a domain of its own: see test/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moe_perception.bags.play import PlayOptions

SAMPLE = Path(__file__).resolve().parents[2] / "moe_perception" / "ros" / "sample" / "camvid_demo"
# Generous bounds on waiting for DDS and a busy 2-core machine; no test asserts a time.
TIMEOUT = 120.0


def test_play_options_are_checked() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        PlayOptions(rate=0.0)
    with pytest.raises(ValueError, match="must not be negative"):
        PlayOptions(delay_s=-1.0)


class Listener:
    """An rclpy node in its own context, spun in a thread, recording messages by topic."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.messages: dict[str, list[Any]] = defaultdict(list)
        self.condition = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def subscribe(self, msg_type: type, topic: str) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        def record(message: Any) -> None:
            with self.condition:
                self.messages[topic].append(message)
                self.condition.notify_all()

        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(msg_type, topic, record, qos)

    def wait_for(self, done: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        with self.condition:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.condition.wait(min(remaining, 0.5))
        return True

    def close(self) -> None:
        import rclpy

        self.running = False
        self.thread.join(timeout=10)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _play(bag: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "moe_perception.cli", "play", str(bag), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def _copy_first(bag: Path, out: Path, topic: str, count: int) -> None:
    """A new bag with the first ``count`` messages of ``topic``."""
    from rosbags.rosbag2 import Reader

    from moe_perception.bags.bagfile import BagFormat, open_bag_writer
    from moe_perception.bags.messages import typestore

    with Reader(bag) as reader, open_bag_writer(out, BagFormat()) as writer:
        (connection,) = [c for c in reader.connections if c.topic == topic]
        target = writer.add_connection(topic, connection.msgtype, typestore=typestore())
        for index, (_, stamp, data) in enumerate(reader.messages([connection])):
            if index == count:
                break
            writer.write(target, stamp, data)


def _read(bag: Path, topic: str) -> list[Any]:
    """The deserialised messages of one topic of a bag."""
    from rosbags.rosbag2 import Reader

    from moe_perception.bags import messages

    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [messages.deserialize(d, c.msgtype) for c, _, d in reader.messages(connections)]


@pytest.mark.slow
def test_play_publishes_every_message_over_dds() -> None:
    pytest.importorskip("rclpy", reason="rclpy is not installed here")
    from sensor_msgs.msg import Image

    from moe_perception.bags.messages import image_to_numpy

    listener = Listener("bag_play_listener")
    try:
        for topic in ("/camera/image_raw", "/camera/labels"):
            listener.subscribe(Image, topic)
        process = _play(SAMPLE, "--rate", "20", "--wait-for-subscribers", str(TIMEOUT))
        output = _finish(process)
        assert process.returncode == 0, output
        assert "published 24 messages" in output
        got = listener.messages
        assert listener.wait_for(lambda: all(len(got[t]) == 12 for t in got) and len(got) == 2)
        for topic in ("/camera/image_raw", "/camera/labels"):
            expected = _read(SAMPLE, topic)
            assert len(got[topic]) == len(expected) == 12
            for received, original in zip(got[topic], expected):
                assert received.header.stamp.sec == original.header.stamp.sec
                assert received.header.frame_id == "camera_optical_frame"
                assert received.encoding == original.encoding
                np.testing.assert_array_equal(image_to_numpy(received), image_to_numpy(original))
    finally:
        listener.close()


@pytest.mark.slow
def test_play_feeds_the_node_and_process_bag_matches_it(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """The node's outputs for the replayed frames equal what process-bag wrote for them."""
    pytest.importorskip("rclpy", reason="rclpy is not installed here")
    try:
        from moe_perception.ros.node import SegmenterNode
    except ImportError as error:
        pytest.skip(f"the node cannot be imported: {error}")
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32MultiArray

    from moe_perception.bags.messages import header_stamp_ns, image_to_numpy
    from moe_perception.bags.process import ProcessOptions, process_bag
    from moe_perception.render import output_topic

    # The first four frames of the sample keep this test short.
    short = tmp_path / "short"
    _copy_first(SAMPLE, short, "/camera/image_raw", 4)
    offline = tmp_path / "offline"
    outputs = ("labels", "overlay", "gate_weights")
    options = ProcessOptions(
        checkpoint=tiny_checkpoint, device="cpu", outputs=outputs, copy_inputs=False
    )
    process_bag(short, offline, options, progress=False)
    expected = {
        name: {
            header_stamp_ns(m.header): m
            for m in _read(offline, output_topic("/camera/image_raw", name))
        }
        for name in ("labels", "overlay")
    }
    # Float32MultiArray has no header: gate weights are compared as a set.
    expected_weights = _read(offline, output_topic("/camera/image_raw", "gate_weights"))
    assert len(expected_weights) == 4

    listener = Listener("bag_node_listener")
    node = None
    try:
        node = SegmenterNode(
            context=listener.context,
            parameter_overrides=[
                Parameter("model_path", value=str(tiny_checkpoint)),
                Parameter("device", value="cpu"),
                Parameter("image_topics", value=["/camera/image_raw"]),
            ],
        )
        listener.executor.add_node(node)
        for name in ("labels", "overlay"):
            listener.subscribe(Image, output_topic("/camera/image_raw", name))
        listener.subscribe(Float32MultiArray, output_topic("/camera/image_raw", "gate_weights"))
        # The node keeps only the newest frame: at 2x some frames may be dropped on a busy
        # machine, so every frame that comes back is compared, and at least one must.
        process = _play(
            short,
            "--rate",
            "2",
            "--topics",
            "/camera/image_raw",
            "--wait-for-subscribers",
            str(TIMEOUT),
        )
        output = _finish(process)
        assert process.returncode == 0, output
        labels_topic = output_topic("/camera/image_raw", "labels")
        got = listener.messages
        assert listener.wait_for(lambda: len(got[labels_topic]) >= 1)
        # Let the frame in hand finish: wait until no output arrives for a few seconds.
        count = -1
        while count != len(got[labels_topic]):
            count = len(got[labels_topic])
            listener.wait_for(lambda c=count: len(got[labels_topic]) > c, timeout=5.0)
        for name in ("labels", "overlay"):
            for message in got[output_topic("/camera/image_raw", name)]:
                stamp = header_stamp_ns(message.header)
                reference = expected[name][stamp]
                assert message.header.frame_id == "camera_optical_frame"
                assert message.encoding == reference.encoding
                np.testing.assert_array_equal(image_to_numpy(message), image_to_numpy(reference))
        weights = got[output_topic("/camera/image_raw", "gate_weights")]
        assert len(weights) >= 1
        (dimension,) = expected_weights[0].layout.dim
        for message in weights:
            assert message.layout.dim[0].label == dimension.label
            assert message.layout.dim[0].size == dimension.size == 2
        assert {tuple(m.data) for m in weights} <= {
            tuple(m.data.tolist()) for m in expected_weights
        }
    finally:
        if node is not None:
            listener.executor.remove_node(node)
            node.destroy_node()
        listener.close()
