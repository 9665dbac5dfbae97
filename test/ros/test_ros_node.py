"""The segmenter node over real DDS: one node process serving two cameras for the module.

The node reads a parameters file derived from config/segmenter.yaml with non-default
rendering settings, so every comparison with the offline path also checks that the file
was applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e '.[ros]')")

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from moe_perception.data import CAMVID_CLASSES  # noqa: E402
from moe_perception.render import IMAGE_OUTPUTS, frame_outputs, output_topic, palette_lut  # noqa: E402
from moe_perception.ros.codec import RAW_ENCODINGS, image_view, resize_rgb  # noqa: E402

if TYPE_CHECKING:
    from conftest import NodeProcess, OfflineSegmenter, Probe  # test/ros/conftest.py

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FRONT = "/cam_front/image_raw"
REAR = "/cam_rear/image_raw"
NODE_NAME = "test_segmenter"
# Differs from config/segmenter.yaml's defaults, so applying the file shows in the outputs.
RENDERING = {"confidence_map": "mutual_information", "colormap": "gray", "overlay_alpha": 0.25}
RNG = np.random.default_rng(3)


def node_parameters(checkpoint: Path) -> dict[str, Any]:
    shipped = yaml.safe_load((ROOT / "config" / "segmenter.yaml").read_text())
    parameters = dict(shipped["/**"]["ros__parameters"])
    parameters.update(
        model_path=str(checkpoint),
        device="cpu",
        # The same thread count as the offline segmenter: identical arithmetic.
        cpu_threads=1,
        image_topics=[FRONT, REAR],
        # Reliable and deep enough that a burst of test frames all reach the callbacks.
        input_reliability="reliable",
        input_depth=1000,
        diagnostics_period=0.2,
        error_log_period=1.0,
        **RENDERING,
    )
    return parameters


class Harness:
    """The node, the probe and one publisher per camera."""

    def __init__(self, node: NodeProcess, probe: Probe, offline: OfflineSegmenter) -> None:
        self.node, self.probe, self.offline = node, probe, offline
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {
            topic: probe.node.create_publisher(Image, topic, qos) for topic in (FRONT, REAR)
        }
        self.palette = palette_lut(offline.metadata.class_colors)

    def now(self) -> Any:
        return self.probe.node.get_clock().now().to_msg()

    def send(self, topic: str, message: Any) -> dict[str, Any]:
        return self.probe.collect(self.node, self.publishers[topic], message, topic)

    def camera_diagnostics(self, topic: str) -> dict[str, str]:
        return self.probe.diagnostics.get(f"{NODE_NAME}: {topic}", {})

    def counter(self, topic: str, key: str) -> int:
        return int(self.camera_diagnostics(topic).get(key, -1))


@pytest.fixture(scope="module")
def harness(
    tiny_checkpoint: Path,
    probe: Probe,
    start_node: Callable[..., NodeProcess],
    offline: OfflineSegmenter,
) -> Iterator[Harness]:
    for topic in (FRONT, REAR):
        probe.subscribe_camera(topic)
    node = start_node(node_parameters(tiny_checkpoint), NODE_NAME)
    harness = Harness(node, probe, offline)
    try:
        probe.wait_until_ready(node)
        # One frame per camera: afterwards both sides have discovered each other.
        for topic in (FRONT, REAR):
            harness.send(
                topic,
                harness.probe.image_message(
                    RNG.integers(0, 256, (8, 8, 3), np.uint8), harness.now()
                ),
            )
        yield harness
    finally:
        status = node.stop()
        assert status == 0, f"the node exited with {status}:\n{node.log[-3000:]}"
        assert "Traceback" not in node.log, node.log


def decoded(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: np.array(image_view(message)) for name, message in outputs.items()}


def offline_outputs(harness: Harness, rgb: np.ndarray, **rendering: Any) -> dict[str, np.ndarray]:
    segmentation = harness.offline(rgb)
    options = {**RENDERING, **rendering}
    return frame_outputs(
        rgb,
        segmentation,
        harness.palette,
        IMAGE_OUTPUTS,
        confidence_map=options["confidence_map"],
        colormap=options["colormap"],
        alpha=options["overlay_alpha"],
    )


def test_every_output_has_its_encoding_size_header_and_range(harness: Harness) -> None:
    rgb = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    stamp = harness.now()
    message = harness.probe.image_message(
        rgb, stamp, frame_id="front_optical", encoding="bgr8", padding=5
    )
    outputs = harness.send(FRONT, message)
    expected_encoding = {
        "labels": "mono8",
        "labels_color": "rgb8",
        "overlay": "rgb8",
        "uncertainty_color": "rgb8",
        "confidence": "mono8",
    }
    for name, output in outputs.items():
        assert output.header.stamp == stamp and output.header.frame_id == "front_optical", name
        assert (output.height, output.width) == (37, 53), name
        assert output.encoding == expected_encoding.get(name, "32FC1"), name
        values = image_view(output)
        if output.encoding == "32FC1":
            assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0
    labels = image_view(outputs["labels"])
    assert labels.max() < len(CAMVID_CLASSES)

    entropy = harness.probe.messages[output_topic(FRONT, "gate_entropy")][-1].data
    assert 0.0 <= entropy <= 1.0
    weights = harness.probe.messages[output_topic(FRONT, "gate_weights")][-1]
    assert (
        weights.layout.dim[0].label == "experts:daylight,dusk" and weights.layout.dim[0].size == 2
    )
    assert sum(weights.data) == pytest.approx(1.0, abs=1e-5)


def test_outputs_equal_the_offline_segmenter_and_renderer(harness: Harness) -> None:
    rgb = RNG.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    received = decoded(harness.send(FRONT, harness.probe.image_message(rgb, harness.now())))
    expected = offline_outputs(harness, rgb)
    np.testing.assert_array_equal(received["labels"], expected["labels"])
    for name in IMAGE_OUTPUTS:
        if received[name].dtype == np.float32:
            np.testing.assert_allclose(received[name], expected[name], atol=1e-6, err_msg=name)
        else:
            # Colours from float maps may round one step apart if the arithmetic differs.
            difference = np.abs(received[name].astype(int) - expected[name].astype(int))
            assert difference.max() <= 1, name


def test_parameters_from_the_yaml_are_applied(harness: Harness) -> None:
    from rcl_interfaces.srv import GetParameters

    client = harness.probe.node.create_client(GetParameters, f"/{NODE_NAME}/get_parameters")
    assert client.wait_for_service(timeout_sec=30)
    names = [*RENDERING, "input_depth", "image_topics", "class_names", "expert_names"]
    future = client.call_async(GetParameters.Request(names=names))
    harness.probe.wait_for(future.done, "get_parameters")
    values = dict(zip(names, future.result().values))
    assert values["confidence_map"].string_value == "mutual_information"
    assert values["colormap"].string_value == "gray"
    assert values["overlay_alpha"].double_value == 0.25
    assert values["input_depth"].integer_value == 1000
    assert list(values["image_topics"].string_array_value) == [FRONT, REAR]
    assert tuple(values["class_names"].string_array_value) == CAMVID_CLASSES
    assert list(values["expert_names"].string_array_value) == ["daylight", "dusk"]

    node = harness.probe.node
    (subscription,) = [
        info for info in node.get_subscriptions_info_by_topic(FRONT) if info.node_name == NODE_NAME
    ]
    # DDS discovery carries reliability and durability, not the history depth.
    assert subscription.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    for name in ("overlay", "gate_entropy"):
        (publisher,) = node.get_publishers_info_by_topic(output_topic(FRONT, name))
        assert publisher.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert publisher.qos_profile.durability == DurabilityPolicy.VOLATILE
    (class_info,) = node.get_publishers_info_by_topic("/segmentation/class_info")
    assert class_info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL


def set_parameter(harness: Harness, name: str, value: Any) -> Any:
    """Set one parameter through the node's set_parameters service; the result."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = harness.probe.node.create_client(SetParameters, f"/{NODE_NAME}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=30)
        if isinstance(value, str):
            parameter = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        else:
            parameter = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        request = SetParameters.Request(parameters=[Parameter(name=name, value=parameter)])
        future = client.call_async(request)
        harness.probe.wait_for(future.done, f"set_parameters {name}")
        return future.result().results[0]
    finally:
        harness.probe.node.destroy_client(client)


def test_parameters_change_at_run_time_and_read_only_ones_refuse(harness: Harness) -> None:
    assert not set_parameter(harness, "model_path", "/elsewhere.pt").successful
    refused = set_parameter(harness, "confidence_map", "softmax")
    assert not refused.successful and "not one of" in refused.reason
    assert not set_parameter(harness, "overlay_alpha", 1.5).successful
    try:
        assert set_parameter(harness, "overlay_alpha", 0.75).successful
        assert set_parameter(harness, "confidence_map", "expert_variance").successful
        rgb = RNG.integers(0, 256, (24, 40, 3), dtype=np.uint8)
        received = decoded(harness.send(FRONT, harness.probe.image_message(rgb, harness.now())))
        expected = offline_outputs(
            harness, rgb, overlay_alpha=0.75, confidence_map="expert_variance"
        )
        np.testing.assert_array_equal(received["overlay"], expected["overlay"])
        difference = np.abs(received["confidence"].astype(int) - expected["confidence"])
        assert difference.max() <= 1
    finally:
        assert set_parameter(harness, "overlay_alpha", RENDERING["overlay_alpha"]).successful
        assert set_parameter(harness, "confidence_map", RENDERING["confidence_map"]).successful


def test_network_resolution_outputs_match_the_offline_path(harness: Harness) -> None:
    rgb = RNG.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    try:
        assert set_parameter(harness, "output_resolution", "network").successful
        received = decoded(harness.send(FRONT, harness.probe.image_message(rgb, harness.now())))
    finally:
        assert set_parameter(harness, "output_resolution", "input").successful
    segmentation = harness.offline(rgb, resolution="network")
    # 45x70 scaled to fit the tiny model's 64x96 input, aspect ratio kept.
    assert segmentation.labels.shape == (62, 96)
    np.testing.assert_array_equal(received["labels"], segmentation.labels)
    assert received["overlay"].shape == (62, 96, 3)
    expected = frame_outputs(
        resize_rgb(rgb, (62, 96)),
        segmentation,
        harness.palette,
        ["overlay"],
        "mutual_information",
        alpha=RENDERING["overlay_alpha"],
    )
    np.testing.assert_array_equal(received["overlay"], expected["overlay"])


def test_two_cameras_are_served_in_one_batch(harness: Harness) -> None:
    """While the worker is busy with one frame, frames of both cameras queue up and are
    then taken together; each still gets its own outputs and header."""
    inference = f"{NODE_NAME}: inference"
    for attempt in range(20):  # noqa: B007 - reported below
        busy = harness.probe.image_message(
            RNG.integers(0, 256, (64, 96, 3), np.uint8), harness.now()
        )
        front = harness.probe.image_message(
            RNG.integers(0, 256, (30, 40, 3), np.uint8), harness.now(), "front"
        )
        rear = harness.probe.image_message(
            RNG.integers(0, 256, (20, 50, 3), np.uint8), harness.now(), "rear"
        )
        harness.publishers[FRONT].publish(busy)
        harness.publishers[FRONT].publish(front)
        harness.publishers[REAR].publish(rear)
        front_out = harness.send(FRONT, front)
        rear_out = harness.send(REAR, rear)
        assert front_out["labels"].header.frame_id == "front" and front_out["labels"].width == 40
        assert rear_out["labels"].header.frame_id == "rear" and rear_out["labels"].width == 50
        largest = harness.probe.wait_for(
            lambda: harness.probe.diagnostics.get(inference, {}).get("largest batch"),
            "inference diagnostics",
        )
        if int(largest) >= 2:
            break
    assert int(largest) == 2, f"no batch of two cameras in {attempt + 1} attempts"


def test_a_burst_of_50_frames_is_bounded_and_the_drops_are_counted(harness: Harness) -> None:
    keys = ("frames received", "frames published", "frames dropped", "messages rejected")

    def settled() -> tuple[int, ...] | None:
        # Idle, every frame received was published, dropped unprocessed or rejected.
        counts = tuple(harness.counter(REAR, key) for key in keys)
        return counts if min(counts) >= 0 and counts[0] == sum(counts[1:]) else None

    before = harness.probe.wait_for(settled, "an idle node")
    burst = [
        harness.probe.image_message(RNG.integers(0, 256, (48, 64, 3), np.uint8), harness.now())
        for _ in range(50)
    ]
    for message in burst:
        harness.publishers[REAR].publish(message)
    # The newest frame is always served.
    last = harness.send(REAR, burst[-1])
    assert last["labels"].header.stamp == burst[-1].header.stamp
    after = harness.probe.wait_for(
        lambda: (counts := settled()) and counts[0] >= before[0] + 50 and counts,
        "the burst to settle",
    )
    received, published, dropped, rejected = (a - b for a, b in zip(after, before))
    # All 50 arrived (send() may have resent the last one); at most one frame waits per
    # camera, so frames arriving while the worker was busy replaced each other.
    assert received >= 50 and rejected == 0
    assert dropped > 0 and published + dropped == received
    assert published < 50


raw_fields = st.fixed_dictionaries(
    {
        "height": st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)),
        "width": st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)),
        "encoding": st.one_of(st.sampled_from(sorted(RAW_ENCODINGS)), st.text(max_size=10)),
        "is_bigendian": st.integers(0, 255),
        "step": st.one_of(st.integers(0, 200), st.integers(0, 2**32 - 1)),
        "data": st.binary(max_size=3000),
    }
)


def corrupted(kind: str, size: int) -> dict[str, Any]:
    """A well-formed 6x8 rgb8 image with one thing wrong."""
    fields = {"height": 6, "width": 8, "encoding": "rgb8", "is_bigendian": 0, "step": 24}
    fields["data"] = bytes(24 * 6)
    if kind == "step":
        fields["step"] = 23 - size % 23
    elif kind == "truncated":
        fields["data"] = bytes(size % (24 * 6))
    elif kind == "zero":
        fields["height"] = 0
    elif kind == "encoding":
        fields["encoding"] = "yuv422"
    elif kind == "nan":
        values = np.full((6, 8), np.nan, dtype=np.float32)
        fields.update(encoding="32FC1", step=32, data=values.tobytes())
    return fields


bad_messages = st.one_of(
    raw_fields,
    st.builds(
        corrupted,
        st.sampled_from(["step", "truncated", "zero", "encoding", "nan"]),
        st.integers(0, 1000),
    ),
)


def test_fuzzed_bad_messages_never_stop_the_node(harness: Harness) -> None:
    received_before = (
        harness.probe.wait_for(
            lambda: harness.counter(FRONT, "frames received") + 1, "diagnostics"
        )
        - 1
    )
    rejected_before = harness.counter(FRONT, "messages rejected")
    sent = []

    @settings(
        max_examples=1000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(bad_messages)
    def publish_bad(fields: dict[str, Any]) -> None:
        message = Image(**fields)
        message.header.stamp = harness.now()
        harness.publishers[FRONT].publish(message)
        sent.append(message)

    publish_bad()
    assert len(sent) >= 1000
    # The node still answers the next good frame, exactly as before.
    rgb = RNG.integers(0, 256, (33, 44, 3), dtype=np.uint8)
    received = decoded(harness.send(FRONT, harness.probe.image_message(rgb, harness.now())))
    np.testing.assert_array_equal(received["labels"], offline_outputs(harness, rgb)["labels"])
    assert harness.node.alive()
    rejected = harness.probe.wait_for(
        lambda: (
            harness.counter(FRONT, "messages rejected") > rejected_before
            and harness.counter(FRONT, "messages rejected")
        ),
        "rejections in the diagnostics",
    )
    assert rejected > rejected_before
    # Every fuzzed message reached the node (reliable QoS, deep input queue).
    harness.probe.wait_for(
        lambda: harness.counter(FRONT, "frames received") >= received_before + len(sent),
        "the fuzzed messages to be counted",
    )
    # One throttled error line names the topic and the problem.
    errors = [line for line in harness.node.log.splitlines() if "frame skipped" in line]
    assert errors and all(FRONT in line for line in errors)
    assert len(errors) < len(sent) / 10
