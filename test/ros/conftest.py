"""Real-DDS helpers: the node as a child process, and an in-process probe node.

DDS stays on localhost in a domain of its own per test run (see test/conftest.py).
rclpy is imported only inside these helpers, so tests without ROS still collect.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import yaml

from moe_perception.render import IMAGE_OUTPUTS, output_topic

T = TypeVar("T")
# Generous: the node's start-up imports torch and builds a model on a busy 2-core machine.
STARTUP_TIMEOUT = 180.0
WAIT_TIMEOUT = 60.0


class NodeProcess:
    """``python3 -m moe_perception.ros.node`` with a parameters file; output to a log."""

    def __init__(
        self,
        parameters: dict[str, Any],
        folder: Path,
        name: str = "segmenter",
        namespace: str = "",
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.params_file = folder / f"{name}.yaml"
        self.params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
        self.log_file = folder / f"{name}.log"
        command = [sys.executable, "-m", "moe_perception.ros.node", "--ros-args"]
        command += ["-r", f"__node:={name}", "--params-file", str(self.params_file)]
        if namespace:
            command += ["-r", f"__ns:={namespace}"]
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.name = name
        self.namespace = namespace

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """Ctrl-C, as a user would; kill only if it does not exit."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class Probe:
    """An rclpy node in its own context, spun in a background thread, recording messages."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.condition = threading.Condition()
        self.messages: dict[str, list[Any]] = defaultdict(list)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self._spinning = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._spinning and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _record(self, topic: str) -> Callable[[Any], None]:
        def callback(message: Any) -> None:
            with self.condition:
                self.messages[topic].append(message)
                self.condition.notify_all()

        return callback

    def subscribe(self, message_type: type, topic: str, qos: Any = None) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(message_type, topic, self._record(topic), qos)

    def subscribe_camera(self, image_topic: str) -> None:
        """Every output of one camera."""
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float32, Float32MultiArray

        for name in IMAGE_OUTPUTS:
            self.subscribe(Image, output_topic(image_topic, name))
        self.subscribe(Float32, output_topic(image_topic, "gate_entropy"))
        self.subscribe(Float32MultiArray, output_topic(image_topic, "gate_weights"))

    def subscribe_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        def callback(message: DiagnosticArray) -> None:
            with self.condition:
                for status in message.status:
                    self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
                    self.diagnostics[status.name]["message"] = status.message
                self.condition.notify_all()

        self.node.create_subscription(DiagnosticArray, "/diagnostics", callback, 10)

    def subscribe_class_info(self, namespace: str = "") -> str:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        topic = f"{namespace}/segmentation/class_info"
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.subscribe(String, topic, latched)
        return topic

    def wait_for(self, value: Callable[[], T], what: str, timeout: float = WAIT_TIMEOUT) -> T:
        """The first truthy ``value()``, re-evaluated whenever a message arrives."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                result = value()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
                self.condition.wait(min(remaining, 0.2))

    def by_stamp(self, topic: str, stamp: Any) -> Any:
        with self.condition:
            for message in reversed(self.messages[topic]):
                if message.header.stamp == stamp:
                    return message
        return None

    @staticmethod
    def image_message(
        rgb: np.ndarray,
        stamp: Any,
        frame_id: str = "camera",
        encoding: str = "rgb8",
        padding: int = 0,
    ) -> Any:
        """An rclpy Image of ``rgb`` (H, W, 3) uint8 as rgb8 or bgr8, rows padded."""
        from sensor_msgs.msg import Image

        pixels = rgb[..., ::-1] if encoding == "bgr8" else rgb
        height, width = rgb.shape[:2]
        rows = np.zeros((height, width * 3 + padding), dtype=np.uint8)
        rows[:, : width * 3] = pixels.reshape(height, -1)
        message = Image(
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=0,
            step=width * 3 + padding,
            data=rows.tobytes(),
        )
        message.header.stamp = stamp
        message.header.frame_id = frame_id
        return message

    def collect(
        self,
        node: NodeProcess,
        publisher: Any,
        message: Any,
        image_topic: str,
        outputs: tuple[str, ...] = IMAGE_OUTPUTS,
    ) -> dict[str, Any]:
        """Publish ``message`` and return its outputs (matched by stamp) by name.

        Resent every few seconds in case the node had not yet matched the probe's
        subscriptions (an output nobody subscribes to is not computed).
        """
        topics = {name: output_topic(image_topic, name) for name in outputs}

        def found() -> dict[str, Any] | None:
            if not node.alive():
                raise RuntimeError(f"the node died:\n{node.log[-3000:]}")
            got = {
                name: self.by_stamp(topic, message.header.stamp) for name, topic in topics.items()
            }
            return got if all(m is not None for m in got.values()) else None

        self.wait_for(
            lambda: all(self.node.count_publishers(topic) for topic in topics.values()),
            f"the node's publishers of {image_topic}",
        )
        deadline = time.monotonic() + WAIT_TIMEOUT
        while True:
            publisher.publish(message)
            try:
                return self.wait_for(found, f"outputs of a frame on {image_topic}", timeout=1.0)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def wait_until_ready(self, node: NodeProcess) -> None:
        """Until the node publishes class_info (its last start-up step) or exits."""
        topic = self.subscribe_class_info(node.namespace)
        self.wait_for(
            lambda: self.messages[topic] or not node.alive(),
            f"class_info of {node.name}",
            STARTUP_TIMEOUT,
        )
        if not node.alive():
            raise RuntimeError(f"{node.name} exited at start-up:\n{node.log[-3000:]}")

    def close(self) -> None:
        import rclpy

        self._spinning = False
        self._thread.join(timeout=10)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


class OfflineSegmenter:
    """The bare :class:`Segmenter` with the arithmetic of the nodes under test.

    Nodes in these tests run with ``cpu_threads: 1``; one thread here too gives identical
    results, and avoids oversubscribing a small machine.
    """

    def __init__(self, checkpoint: Path) -> None:
        from moe_perception.segmenter import Segmenter

        self.segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
        self.metadata = self.segmenter.metadata

    def __call__(self, image: np.ndarray, **options: Any) -> Any:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.segmenter(image, **options)
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def offline(tiny_checkpoint: Path) -> OfflineSegmenter:
    """The offline path the node's outputs are compared with."""
    return OfflineSegmenter(tiny_checkpoint)


@pytest.fixture(scope="session")
def probe() -> Iterator[Probe]:
    """One probe node for the whole session."""
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e '.[ros]')")
    probe = Probe(f"test_probe_{os.getpid()}")
    probe.subscribe_diagnostics()
    yield probe
    probe.close()


@pytest.fixture(scope="session")
def start_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., NodeProcess]]:
    """Starts node processes (``NodeProcess`` arguments); any left running are stopped."""
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e '.[ros]')")
    started: list[NodeProcess] = []

    def start(parameters: dict[str, Any], name: str, namespace: str = "") -> NodeProcess:
        node = NodeProcess(parameters, tmp_path_factory.mktemp(name), name, namespace)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()
