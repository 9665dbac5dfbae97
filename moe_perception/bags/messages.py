"""numpy <-> ROS 2 message conversion for images, camera info and the gate outputs.

The builders return ``rosbags`` message objects (what the bag writers serialise).
:func:`image_to_numpy` is duck-typed: it reads only the fields ``height``, ``width``,
``encoding``, ``is_bigendian``, ``step`` and ``data``, so it works on ``rosbags`` and
rclpy messages alike. Camera images to segment are decoded with the node's own
:mod:`moe_perception.ros.codec`, so offline and online runs see the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

import numpy as np

from moe_perception.render import gate_weights_label

# Encodings whose pixels are one of these numpy layouts: (dtype, channels).
_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "8UC1": ("u1", 1),
    "8UC3": ("u1", 3),
    "mono16": ("u2", 1),
    "16UC1": ("u2", 1),
    "32FC1": ("f4", 1),
}
ImageEncoding = Literal["rgb8", "mono8", "32FC1"]
DistortionModel = Literal["plumb_bob", "equidistant"]


@cache
def typestore() -> Any:
    """The ``rosbags`` type store used to write and read bags.

    Humble's definitions: the messages used here (Image, CameraInfo, Float32,
    Float32MultiArray) are identical in every ROS 2 distribution since Humble, so their
    type hashes match those of newer distributions too.
    """
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def _types() -> dict[str, Any]:
    return typestore().types


def make_header(stamp_ns: int, frame_id: str) -> Any:
    """A ``std_msgs/Header`` from a time in nanoseconds since the epoch."""
    if stamp_ns < 0:
        raise ValueError(f"stamp must not be negative, got {stamp_ns} ns")
    types = _types()
    seconds, nanoseconds = divmod(int(stamp_ns), 1_000_000_000)
    stamp = types["builtin_interfaces/msg/Time"](sec=seconds, nanosec=nanoseconds)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def header_stamp_ns(header: Any) -> int:
    """Nanoseconds since the epoch of a header's stamp."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def numpy_to_image(array: np.ndarray, encoding: ImageEncoding, header: Any) -> Any:
    """A ``sensor_msgs/Image`` holding ``array``.

    Args:
        array: (H, W, 3) uint8 for ``rgb8``, (H, W) uint8 for ``mono8``, (H, W) float32
            for ``32FC1``.
        encoding: the image encoding.
        header: the message header (see :func:`make_header`).

    Raises:
        ValueError: ``array`` does not have the shape and dtype of ``encoding``.
    """
    if encoding not in ("rgb8", "mono8", "32FC1"):
        raise ValueError(f"unsupported encoding {encoding!r}; use rgb8, mono8 or 32FC1")
    dtype, channels = _ENCODINGS[encoding]
    expected_ndim = 3 if channels > 1 else 2
    if (
        array.ndim != expected_ndim
        or (channels > 1 and array.shape[2] != channels)
        or array.dtype != np.dtype(dtype)
    ):
        raise ValueError(
            f"{encoding} needs a {np.dtype(dtype)} array of "
            f"{'(H, W, 3)' if channels > 1 else '(H, W)'}, got {array.dtype} {array.shape}"
        )
    # Little-endian data, as every ROS 2 driver on x86 and ARM publishes it.
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    height, width = array.shape[:2]
    return _types()["sensor_msgs/msg/Image"](
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * data.itemsize,
        data=data.view(np.uint8).reshape(-1),
    )


def image_to_numpy(msg: Any) -> np.ndarray:
    """The pixels of a ``sensor_msgs/Image`` as a numpy array (a copy).

    Returns:
        (H, W) for one channel, else (H, W, C), in the message's own channel order.

    Raises:
        ValueError: an unsupported encoding, or data too short for the declared size.
    """
    encoding = msg.encoding
    if encoding not in _ENCODINGS:
        raise ValueError(
            f"unsupported image encoding {encoding!r}; supported: {sorted(_ENCODINGS)}"
        )
    dtype, channels = _ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ValueError(f"{encoding} image of width {width}: step {step} < {row_bytes}")
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if raw.size < step * height:
        raise ValueError(
            f"{encoding} image {width}x{height} (step {step}) needs {step * height} bytes, "
            f"has {raw.size}"
        )
    # Rows may be padded beyond width * channels: cut each row to its pixels.
    rows = raw[: step * height].reshape(height, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian and itemsize > 1 else "<"
    pixels = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order))
    pixels = pixels.astype(np.dtype(dtype).newbyteorder("="), copy=True)
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, -1)


def make_camera_info(
    header: Any,
    width: int,
    height: int,
    camera_matrix: np.ndarray,
    distortion: Sequence[float],
    distortion_model: DistortionModel,
) -> Any:
    """A ``sensor_msgs/CameraInfo`` for an unrectified camera.

    ``R`` is the identity and ``P = [K | 0]``: the images are as recorded, with their
    distortion described by ``D``.

    Args:
        header: the header of the matching images.
        width: image width in pixels.
        height: image height in pixels.
        camera_matrix: (3, 3) intrinsic matrix K.
        distortion: the coefficients of ``distortion_model`` (5 for ``plumb_bob``: k1,
            k2, p1, p2, k3; 4 for ``equidistant``: k1..k4).
        distortion_model: ``plumb_bob`` or ``equidistant`` (OpenCV's fisheye model).
    """
    k = np.asarray(camera_matrix, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"camera matrix must be 3x3, got shape {k.shape}")
    types = _types()
    projection = np.zeros((3, 4), dtype=np.float64)
    projection[:, :3] = k
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return types["sensor_msgs/msg/CameraInfo"](
        header=header,
        height=int(height),
        width=int(width),
        distortion_model=distortion_model,
        d=np.asarray(distortion, dtype=np.float64),
        k=k.reshape(-1),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=projection.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def make_float32(value: float) -> Any:
    """A ``std_msgs/Float32``."""
    return _types()["std_msgs/msg/Float32"](data=float(value))


def make_gate_weights(weights: np.ndarray, expert_names: Sequence[str]) -> Any:
    """A ``std_msgs/Float32MultiArray`` of the K gate weights.

    One dimension: ``label`` = ``experts:<name>,<name>,...`` (see
    :func:`gate_weights_label`), ``size`` = ``stride`` = K, ``data_offset`` = 0.
    """
    values = np.asarray(weights, dtype=np.float32).reshape(-1)
    if values.size != len(expert_names):
        raise ValueError(f"{values.size} gate weights for {len(expert_names)} expert names")
    types = _types()
    dimension = types["std_msgs/msg/MultiArrayDimension"](
        label=gate_weights_label(expert_names), size=values.size, stride=values.size
    )
    layout = types["std_msgs/msg/MultiArrayLayout"](dim=[dimension], data_offset=0)
    return types["std_msgs/msg/Float32MultiArray"](layout=layout, data=values)


def serialize(msg: Any) -> bytes:
    """CDR bytes of a ``rosbags`` message, as rosbag2 stores them."""
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    """A ``rosbags`` message from CDR bytes."""
    return typestore().deserialize_cdr(data, msgtype)
