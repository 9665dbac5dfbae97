"""The node's parts that need no DDS: frame hand-over, counters, parameters, config
files, the launch file's arguments and the CLI without rclpy."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from moe_perception.render import IMAGE_OUTPUTS
from moe_perception.ros.frames import LatestFrames
from moe_perception.ros.parameters import PARAMETERS, PARAMETERS_BY_NAME, NodeSettings
from moe_perception.ros.stats import CameraStats, ErrorThrottle

ROOT = Path(__file__).resolve().parents[2]


def test_latest_frames_keeps_the_newest_and_returns_the_dropped() -> None:
    frames: LatestFrames[str, int] = LatestFrames()
    assert frames.put("front", 1) is None
    assert frames.put("front", 2) == 1
    assert frames.put("rear", 10) is None
    assert len(frames) == 2
    assert frames.take() == {"front": 2, "rear": 10}
    assert len(frames) == 0


def test_latest_frames_stays_bounded_under_a_burst() -> None:
    frames: LatestFrames[int, bytes] = LatestFrames()
    dropped = sum(frames.put(i % 3, bytes(100)) is not None for i in range(5000))
    assert len(frames) == 3 and dropped == 5000 - 3


def test_take_waits_for_a_frame_and_close_wakes_the_consumer() -> None:
    frames: LatestFrames[str, int] = LatestFrames()
    assert frames.take(timeout=0.01) == {}
    taken: list[dict[str, int]] = []
    consumer = threading.Thread(target=lambda: taken.extend([frames.take(), frames.take()]))
    consumer.start()
    frames.put("front", 7)
    while len(frames):  # the consumer takes it
        threading.Event().wait(0.001)
    frames.close()
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert taken == [{"front": 7}, {}]
    assert frames.closed and frames.take() == {}


def test_camera_stats_report_counts_and_rates_per_period() -> None:
    stats = CameraStats(now=0.0)
    for _ in range(4):
        stats.on_received()
    stats.on_dropped()
    stats.on_rejected("wrong step 3")
    stats.on_published(latency=0.1, inference=0.02)
    stats.on_published(latency=None, inference=0.04)
    report = stats.report(now=2.0)
    assert (report.received, report.published, report.dropped, report.rejected) == (4, 2, 1, 1)
    assert report.input_rate == 2.0 and report.output_rate == 1.0
    assert report.latency_mean == pytest.approx(0.1) and report.latency_max == pytest.approx(0.1)
    assert report.inference_mean == pytest.approx(0.03)
    assert report.rejected_in_period == 1 and report.last_error == "wrong step 3"
    quiet = stats.report(now=3.0)
    assert quiet.input_rate == 0.0 and quiet.rejected_in_period == 0 and quiet.rejected == 1
    assert quiet.latency_mean != quiet.latency_mean  # nan: nothing measured


def test_error_throttle_is_per_key_and_counts_the_suppressed() -> None:
    throttle = ErrorThrottle(period=5.0)
    assert throttle.allow("/front", 0.0) == 0
    assert throttle.allow("/front", 1.0) is None
    assert throttle.allow("/front", 2.0) is None
    assert throttle.allow("/rear", 2.0) == 0
    assert throttle.allow("/front", 5.5) == 2


def test_parameter_checks_name_the_parameter_and_the_problem() -> None:
    check = {spec.name: spec.validate for spec in PARAMETERS}
    assert check["device"]("cuda:1") is None
    assert "parameter device" in check["device"]("tpu")
    assert "outside [0.0, 1.0]" in check["overlay_alpha"](1.5)
    assert "not one of" in check["colormap"]("jet")
    assert "unknown uncertainty maps ['entropy']" in check["uncertainty_maps"](("entropy",))
    assert "at least one" in check["image_topics"](())
    assert "repeat" in check["image_topics"](("a/image", "a/image"))
    for spec in PARAMETERS:
        assert spec.validate(spec.default) is None, spec.name


def test_settings_have_one_field_per_parameter_and_take_the_defaults() -> None:
    assert [f.name for f in fields(NodeSettings)] == [spec.name for spec in PARAMETERS]
    defaults = NodeSettings(**{spec.name: spec.default for spec in PARAMETERS})
    assert defaults.image_topics == ("camera/image_raw",)


def test_config_yaml_sets_every_parameter_to_its_default() -> None:
    document = yaml.safe_load((ROOT / "config" / "segmenter.yaml").read_text())
    values = document["/**"]["ros__parameters"]
    assert set(values) == set(PARAMETERS_BY_NAME)
    for name, value in values.items():
        default = PARAMETERS_BY_NAME[name].default
        assert (tuple(value) if isinstance(value, list) else value) == default, name


def test_docs_describe_every_parameter_and_output() -> None:
    docs = (ROOT / "docs" / "node.md").read_text()
    for spec in PARAMETERS:
        assert f"`{spec.name}`" in docs, spec.name
    for output in (*IMAGE_OUTPUTS, "gate_entropy", "gate_weights", "class_info"):
        assert f"`{output}`" in docs or f"/{output}`" in docs, output


def test_rviz_displays_match_the_output_qos() -> None:
    document = yaml.safe_load((ROOT / "config" / "segmenter.rviz").read_text())
    displays = document["Visualization Manager"]["Displays"]
    topics = {display["Topic"]["Value"]: display["Topic"] for display in displays}
    # The default camera (image_topics: camera/image_raw) publishes under /camera.
    assert set(topics) == {
        f"/camera/segmentation/{name}" for name in ("overlay", "uncertainty_color", "labels_color")
    }
    for display in displays:
        assert display["Class"] == "rviz_default_plugins/Image"
    output_depth = PARAMETERS_BY_NAME["output_depth"].default
    for qos in topics.values():
        assert qos["Reliability Policy"] == "Reliable"  # output_reliability: reliable
        assert qos["Durability Policy"] == "Volatile"
        assert qos["History Policy"] == "Keep Last" and qos["Depth"] == output_depth


def test_launch_file_declares_the_documented_arguments() -> None:
    source = (ROOT / "launch" / "segmenter.launch.py").read_text()
    tree = ast.parse(source)
    declared = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "DeclareLaunchArgument"
        and isinstance(node.args[0], ast.Constant)
    ]
    assert declared == [
        "params_file",
        "model_path",
        "device",
        "image_topics",
        "namespace",
        "use_rviz",
        "bag",
        "dds_profile",
    ]
    # The executable the launch file starts is the one setup.py installs.
    assert '"segmenter_node"' in source
    assert "segmenter_node = moe_perception.ros.node:main" in (ROOT / "setup.py").read_text()
    for name in ("segmenter.yaml", "segmenter.rviz", "fastdds_large_images.xml"):
        assert f'"{name}"' in source and (ROOT / "config" / name).is_file()


def test_cli_builds_and_demo_says_ros_is_missing_without_rclpy() -> None:
    # A machine without ROS: rclpy cannot be imported at all.
    script = (
        "import sys; sys.modules['rclpy'] = None\n"
        "from moe_perception.cli import main\n"
        "sys.exit(main(['demo', '--bag', '.']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert "rclpy" in result.stderr and "is not installed" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_take_error_counts_as_ctrl_c_only_if_the_context_shuts_down() -> None:
    from moe_perception.ros.node import _shuts_down_within

    class Context:
        def __init__(self, ok_calls: int) -> None:
            self.ok_calls = ok_calls

        def ok(self) -> bool:
            self.ok_calls -= 1
            return self.ok_calls >= 0

    assert _shuts_down_within(Context(0), 0.5)  # already shut down
    assert _shuts_down_within(Context(3), 0.5)  # shut down a moment later
    assert not _shuts_down_within(Context(10**9), 0.05)  # a real error: still running
