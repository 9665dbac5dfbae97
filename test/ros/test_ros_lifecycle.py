"""Start-up failures exit non-zero with one clear line; Ctrl-C stops the node cleanly."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e '.[ros]')")

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from moe_perception.checkpoint import FORMAT, FORMAT_VERSION, read_checkpoint  # noqa: E402

if TYPE_CHECKING:
    from conftest import NodeProcess, Probe  # test/ros/conftest.py

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mismatched_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid file whose weights lack a tensor the architecture needs."""
    metadata, state = read_checkpoint(tiny_checkpoint)
    state.pop(sorted(state)[0])
    path = tmp_path_factory.mktemp("mismatched") / "mismatched.pt"
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": metadata.to_json(),
        "state_dict": state,
    }
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("missing model", "checkpoint not found: /nonexistent/model.pt"),
        ("mismatched model", "does not match its architecture"),
        ("alpha out of range", "overlay_alpha"),
        ("unknown device", "parameter device: 'tpu' is not a device"),
    ],
)
def test_bad_start_up_exits_non_zero_with_a_clear_message(
    case: str,
    problem: str,
    tiny_checkpoint: Path,
    mismatched_checkpoint: Path,
    start_node: Callable[..., NodeProcess],
) -> None:
    parameters: dict[str, Any] = {"model_path": str(tiny_checkpoint), "device": "cpu"}
    if case == "missing model":
        parameters["model_path"] = "/nonexistent/model.pt"
    elif case == "mismatched model":
        parameters["model_path"] = str(mismatched_checkpoint)
    elif case == "alpha out of range":
        parameters["overlay_alpha"] = 2.0
    else:
        parameters["device"] = "tpu"
    node = start_node(parameters, f"bad_{case.replace(' ', '_')}")
    status = node.process.wait(timeout=300)
    assert status == 1, node.log
    assert "cannot start" in node.log and problem in node.log, node.log
    assert "Traceback" not in node.log


def test_ctrl_c_while_busy_stops_cleanly(
    tiny_checkpoint: Path, probe: Probe, start_node: Callable[..., NodeProcess]
) -> None:
    topic = "/cam_stop/image_raw"
    parameters = {"model_path": str(tiny_checkpoint), "device": "cpu", "image_topics": [topic]}
    node = start_node(parameters, "test_stopping_segmenter", namespace="/stopping_test")
    probe.wait_until_ready(node)
    publisher = probe.node.create_publisher(
        Image, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    frame = np.zeros((64, 96, 3), dtype=np.uint8)
    for _ in range(5):
        publisher.publish(probe.image_message(frame, probe.node.get_clock().now().to_msg()))
    node.process.send_signal(signal.SIGINT)
    assert node.process.wait(timeout=60) == 0, node.log
    assert "Traceback" not in node.log and "ERROR" not in node.log, node.log
