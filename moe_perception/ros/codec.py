"""Image messages to numpy arrays and back, without cv_bridge.

Works on any object with the fields of ``sensor_msgs/Image`` (``height``, ``width``,
``encoding``, ``is_bigendian``, ``step``, ``data``) or ``sensor_msgs/CompressedImage``
(``format``, ``data``): rclpy messages, rosbags messages or plain test objects. No rclpy
import, so it is tested and used without ROS.

Decoding is a strided view over the message's buffer (no copy) wherever the layout is
already RGB; other layouts are converted with one copy.
"""

from __future__ import annotations

import array
import io
import sys
import warnings
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from PIL import Image as PILImage

ChannelOrder = Literal["rgb", "bgr", "rgba", "bgra", "mono"]

# Larger frames are refused rather than allocated: no camera sends them, a fuzzed or
# corrupt header does (and a PNG "decompression bomb" would).
MAX_PIXELS = 8192 * 8192
HOST_IS_BIGENDIAN = sys.byteorder == "big"
COMPRESSED_FORMATS = ("jpeg", "png")


class ImageDecodeError(ValueError):
    """A message that cannot be turned into an image; the message says why."""


@dataclass(frozen=True)
class PixelLayout:
    """How one ``sensor_msgs/Image`` encoding lays out a pixel.

    Attributes:
        kind: numpy kind and size of one channel (``u1``, ``u2``, ``f4``).
        channels: channels per pixel.
        order: channel order.
    """

    kind: Literal["u1", "u2", "f4"]
    channels: int
    order: ChannelOrder

    @property
    def itemsize(self) -> int:
        return int(self.kind[1])


# Encodings accepted as input (names from sensor_msgs/image_encodings.hpp).
RAW_ENCODINGS: dict[str, PixelLayout] = {
    "rgb8": PixelLayout("u1", 3, "rgb"),
    "bgr8": PixelLayout("u1", 3, "bgr"),
    "rgba8": PixelLayout("u1", 4, "rgba"),
    "bgra8": PixelLayout("u1", 4, "bgra"),
    "mono8": PixelLayout("u1", 1, "mono"),
    "8UC1": PixelLayout("u1", 1, "mono"),
    "rgb16": PixelLayout("u2", 3, "rgb"),
    "bgr16": PixelLayout("u2", 3, "bgr"),
    "rgba16": PixelLayout("u2", 4, "rgba"),
    "bgra16": PixelLayout("u2", 4, "bgra"),
    "mono16": PixelLayout("u2", 1, "mono"),
    "16UC1": PixelLayout("u2", 1, "mono"),
    "32FC1": PixelLayout("f4", 1, "mono"),
}
# Encodings this package publishes, by (dtype, channels).
_OUTPUT_ENCODINGS: dict[tuple[str, int], str] = {
    ("u1", 1): "mono8",
    ("u1", 3): "rgb8",
    ("f4", 1): "32FC1",
}


class RawImage(Protocol):
    """The fields of ``sensor_msgs/Image`` that decoding reads."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: object


class CompressedImage(Protocol):
    """The fields of ``sensor_msgs/CompressedImage`` that decoding reads."""

    format: str
    data: object


def _as_buffer(data: object) -> memoryview | np.ndarray:
    """The message's bytes without copying where ``data`` supports the buffer protocol."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        # A plain list of ints (a message built by hand): one copy.
        return np.asarray(data, dtype=np.uint8)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def image_view(message: RawImage) -> np.ndarray:
    """The pixels of an Image message in their own layout, as a view over its data.

    Returns:
        (H, W) for one channel, else (H, W, C); dtype uint8, uint16 or float32 in the
        message's byte order. Row padding (``step``) is skipped by the strides.

    Raises:
        ImageDecodeError: unknown encoding, zero or huge size, a step shorter than a row,
            or data whose length is not ``step * height``.
    """
    encoding = message.encoding
    layout = RAW_ENCODINGS.get(encoding)
    if layout is None:
        raise ImageDecodeError(
            f"unknown encoding {encoding!r}; supported: {', '.join(RAW_ENCODINGS)}"
        )
    height, width, step = int(message.height), int(message.width), int(message.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"zero size image ({height}x{width})")
    if height * width > MAX_PIXELS:
        raise ImageDecodeError(f"image too large ({height}x{width} > {MAX_PIXELS} pixels)")
    row_bytes = width * layout.channels * layout.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"wrong step {step}: a row of {width} {encoding} pixels needs {row_bytes} bytes"
        )
    buffer = _as_buffer(message.data)
    expected = step * height
    if len(buffer) != expected:
        problem = "truncated data" if len(buffer) < expected else "too much data"
        raise ImageDecodeError(
            f"{problem}: {len(buffer)} bytes, expected step x height = {step} x {height} = "
            f"{expected}"
        )
    byte_order = ">" if message.is_bigendian else "<"
    dtype = np.dtype(layout.kind).newbyteorder(byte_order if layout.itemsize > 1 else "=")
    shape: tuple[int, ...] = (height, width, layout.channels)
    strides: tuple[int, ...] = (step, layout.channels * layout.itemsize, layout.itemsize)
    if layout.channels == 1:
        shape, strides = shape[:2], strides[:2]
    return np.ndarray(shape, dtype=dtype, buffer=buffer, strides=strides)


def _to_uint8(values: np.ndarray, kind: str) -> np.ndarray:
    if kind == "u1":
        return values
    if kind == "u2":
        # Full 16-bit range onto 8 bits, rounded (65535 -> 255).
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if not np.isfinite(values).all():
        raise ImageDecodeError("float image contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise ImageDecodeError(f"float image values must lie in [0, 1], got [{low}, {high}]")
    return (values.astype(np.float32) * 255.0 + 0.5).astype(np.uint8)


def decode_image(message: RawImage) -> np.ndarray:
    """An Image message as RGB uint8 (H, W, 3).

    ``rgb8`` (any step) and the RGB part of ``rgba8`` are views over the message data, no
    copy; other encodings are converted with one copy. 16-bit values are scaled from the
    full 16-bit range; ``32FC1`` must hold grey levels in [0, 1].

    Raises:
        ImageDecodeError: see :func:`image_view`; also NaN, infinite or out-of-range float
            values.
    """
    view = image_view(message)
    layout = RAW_ENCODINGS[message.encoding]
    if layout.order == "mono":
        grey = _to_uint8(view, layout.kind)
        return np.repeat(grey[:, :, None], 3, axis=2)
    channels = {"rgb": [0, 1, 2], "rgba": [0, 1, 2], "bgr": [2, 1, 0], "bgra": [2, 1, 0]}
    if layout.order in ("rgb", "rgba") and layout.kind == "u1":
        return view[:, :, :3]
    # Fancy indexing copies into a C-contiguous array (a reversed view has negative
    # strides, which torch.from_numpy refuses).
    return _to_uint8(view[:, :, channels[layout.order]], layout.kind)


def decode_compressed(message: CompressedImage) -> np.ndarray:
    """A CompressedImage (JPEG or PNG) as RGB uint8 (H, W, 3).

    ``format`` may be ``jpeg``, ``png`` or image_transport's ``"bgr8; jpeg compressed
    bgr8"``; the decoder checks the bytes themselves.

    Raises:
        ImageDecodeError: another format, empty or corrupt data, or a huge image.
    """
    declared = message.format.lower()
    if declared and not any(name in declared for name in (*COMPRESSED_FORMATS, "jpg")):
        raise ImageDecodeError(
            f"unsupported compressed format {message.format!r}; supported: jpeg, png"
        )
    buffer = _as_buffer(message.data)
    if len(buffer) == 0:
        raise ImageDecodeError("empty compressed image data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            image = PILImage.open(io.BytesIO(buffer))
            if image.format not in ("JPEG", "PNG"):
                raise ImageDecodeError(f"compressed data is {image.format}, not JPEG or PNG")
            width, height = image.size
            if width * height > MAX_PIXELS or width == 0 or height == 0:
                raise ImageDecodeError(f"compressed image has unusable size {height}x{width}")
            image.load()
    except ImageDecodeError:
        raise
    except Exception as error:  # Pillow raises many exception types on corrupt data.
        raise ImageDecodeError(f"corrupt compressed image: {error}") from error
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(image).clip(0, 65535).astype(np.uint16)
        return np.repeat(_to_uint8(grey, "u2")[:, :, None], 3, axis=2)
    # np.array, not asarray: Pillow's buffer is read-only, and torch warns on those.
    return np.array(image.convert("RGB"))


@dataclass(frozen=True)
class EncodedImage:
    """The fields of a ``sensor_msgs/Image`` holding one array (header left to the caller).

    ``data`` is an ``array.array('B')``, the type rclpy stores without converting.
    """

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: array.array


def encode_image(image: np.ndarray) -> EncodedImage:
    """An output array as Image fields: mono8 (H, W) uint8, rgb8 (H, W, 3) uint8 or
    32FC1 (H, W) float32, in this machine's byte order.

    Raises:
        ValueError: any other dtype or shape.
    """
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    encoding = _OUTPUT_ENCODINGS.get((image.dtype.kind + str(image.dtype.itemsize), channels))
    if encoding is None:
        raise ValueError(
            f"cannot encode an array of dtype {image.dtype} and shape {image.shape}: "
            "expected (H, W) uint8, (H, W, 3) uint8 or (H, W) float32"
        )
    contiguous = np.ascontiguousarray(image)
    data = array.array("B")
    data.frombytes(memoryview(contiguous).cast("B"))
    height, width = image.shape[:2]
    return EncodedImage(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(HOST_IS_BIGENDIAN),
        step=width * channels * image.dtype.itemsize,
        data=data,
    )


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of RGB uint8 (H, W, 3) to ``size`` = (height, width)."""
    if image.shape[:2] == size:
        return image
    resized = PILImage.fromarray(np.ascontiguousarray(image)).resize(
        (size[1], size[0]), PILImage.BILINEAR
    )
    return np.asarray(resized)
