"""numpy <-> ROS message conversion."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from moe_perception.bags import messages


def _header() -> object:
    return messages.make_header(1_700_000_000_123_456_789, "camera_optical_frame")


def test_header_splits_nanoseconds() -> None:
    header = _header()
    assert (header.stamp.sec, header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert messages.header_stamp_ns(header) == 1_700_000_000_123_456_789
    with pytest.raises(ValueError, match="negative"):
        messages.make_header(-1, "x")


@pytest.mark.parametrize(
    ("encoding", "array"),
    [
        ("rgb8", np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)),
        ("mono8", np.array([[0, 7, 255], [1, 2, 3]], dtype=np.uint8)),
        ("32FC1", np.array([[0.0, 0.25, 1.0], [0.5, 1e-7, 0.75]], dtype=np.float32)),
    ],
)
def test_image_round_trip_through_cdr(encoding: str, array: np.ndarray) -> None:
    msg = messages.numpy_to_image(array, encoding, _header())
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (2, 3, encoding, 0)
    assert msg.step == 3 * array.itemsize * (3 if array.ndim == 3 else 1)
    back = messages.deserialize(messages.serialize(msg), "sensor_msgs/msg/Image")
    decoded = messages.image_to_numpy(back)
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)
    assert back.header.frame_id == "camera_optical_frame"


def test_numpy_to_image_rejects_a_mismatched_array() -> None:
    with pytest.raises(ValueError, match="rgb8 needs a uint8 array of \\(H, W, 3\\)"):
        messages.numpy_to_image(np.zeros((2, 3), np.uint8), "rgb8", _header())
    with pytest.raises(ValueError, match="32FC1 needs a float32"):
        messages.numpy_to_image(np.zeros((2, 3), np.float64), "32FC1", _header())


def test_decoding_handles_padding_and_big_endian() -> None:
    padded = SimpleNamespace(
        height=1,
        width=2,
        encoding="rgb8",
        is_bigendian=0,
        step=8,  # two bytes of padding per row
        data=np.array([1, 2, 3, 4, 5, 6, 99, 99], dtype=np.uint8),
    )
    np.testing.assert_array_equal(
        messages.image_to_numpy(padded), np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)
    )
    values = np.array([[0.5, -2.0]], dtype=">f4")
    big = SimpleNamespace(
        height=1, width=2, encoding="32FC1", is_bigendian=1, step=8, data=values.tobytes()
    )
    decoded = messages.image_to_numpy(big)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, [[0.5, -2.0]])


def test_decoding_reports_bad_images() -> None:
    short = SimpleNamespace(
        height=2, width=2, encoding="mono8", is_bigendian=0, step=2, data=bytes(3)
    )
    with pytest.raises(ValueError, match="needs 4 bytes, has 3"):
        messages.image_to_numpy(short)
    unknown = SimpleNamespace(
        height=1, width=1, encoding="yuv422", is_bigendian=0, step=2, data=bytes(2)
    )
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        messages.image_to_numpy(unknown)


def test_gate_weights_layout() -> None:
    msg = messages.make_gate_weights(np.array([0.75, 0.25]), ("daylight", "dusk"))
    back = messages.deserialize(messages.serialize(msg), "std_msgs/msg/Float32MultiArray")
    (dim,) = back.layout.dim
    assert (dim.label, dim.size, dim.stride) == ("experts:daylight,dusk", 2, 2)
    assert back.layout.data_offset == 0
    assert back.data.dtype == np.float32
    assert back.data.tolist() == [0.75, 0.25]
    with pytest.raises(ValueError, match="3 gate weights for 2 expert names"):
        messages.make_gate_weights(np.ones(3), ("a", "b"))


def test_camera_info_is_unrectified_with_p_from_k() -> None:
    k = np.array([[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
    msg = messages.make_camera_info(_header(), 640, 480, k, [0.1, 0.2, 0.0, 0.0, 0.3], "plumb_bob")
    back = messages.deserialize(messages.serialize(msg), "sensor_msgs/msg/CameraInfo")
    assert (back.width, back.height, back.distortion_model) == (640, 480, "plumb_bob")
    assert back.k.tolist() == k.reshape(-1).tolist()
    assert back.d.tolist() == [0.1, 0.2, 0.0, 0.0, 0.3]
    assert back.r.tolist() == np.eye(3).reshape(-1).tolist()
    assert back.p.tolist() == [500.0, 0.0, 320.0, 0.0, 0.0, 510.0, 240.0, 0.0, 0, 0, 1.0, 0]


def test_rclpy_reads_what_rosbags_writes() -> None:
    """The bytes in a bag are what a ROS 2 subscriber receives."""
    serialization = pytest.importorskip(
        "rclpy.serialization", reason="rclpy is not installed here"
    )
    from sensor_msgs.msg import Image

    array = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    data = messages.serialize(messages.numpy_to_image(array, "rgb8", _header()))
    msg = serialization.deserialize_message(data, Image)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    np.testing.assert_array_equal(messages.image_to_numpy(msg), array)
