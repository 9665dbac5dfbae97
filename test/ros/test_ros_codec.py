"""The image codec: every encoding, padding and byte order; clear errors on bad input."""

from __future__ import annotations

import array
import io
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from moe_perception.ros.codec import (
    MAX_PIXELS,
    RAW_ENCODINGS,
    ImageDecodeError,
    decode_compressed,
    decode_image,
    encode_image,
    image_view,
    resize_rgb,
)


@dataclass
class FakeImage:
    """The fields of sensor_msgs/Image, as rclpy and rosbags messages have them."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: object


@dataclass
class FakeCompressed:
    format: str
    data: object


RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def pack(channels: np.ndarray, encoding: str, padding: int, bigendian: bool) -> FakeImage:
    """``channels`` (H, W, C) or (H, W) laid out as an Image with ``padding`` bytes a row."""
    height, width = channels.shape[:2]
    order = ">" if bigendian else "<"
    values = channels.astype(channels.dtype.newbyteorder(order))
    rows = values.reshape(height, -1).view(np.uint8)
    padded = np.zeros((height, rows.shape[1] + padding), dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    return FakeImage(
        height,
        width,
        encoding,
        int(bigendian),
        padded.shape[1],
        array.array("B", padded.tobytes()),
    )


def layout_of(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(what to pack, the RGB uint8 the codec must return) for ``encoding``."""
    grey = rgb[..., 0]
    alpha = np.full(rgb.shape[:2] + (1,), 200, dtype=np.uint8)
    eight = {
        "rgb8": (rgb, rgb),
        "bgr8": (rgb[..., ::-1], rgb),
        "rgba8": (np.concatenate([rgb, alpha], axis=2), rgb),
        "bgra8": (np.concatenate([rgb[..., ::-1], alpha], axis=2), rgb),
        "mono8": (grey, np.repeat(grey[..., None], 3, axis=2)),
        "8UC1": (grey, np.repeat(grey[..., None], 3, axis=2)),
    }
    if encoding in eight:
        return eight[encoding]
    if encoding == "32FC1":
        values = grey.astype(np.float32) / 255.0
        return values, np.repeat(grey[..., None], 3, axis=2)
    # 16-bit: v * 257 spans the full range and must map back to v exactly.
    narrow, expected = eight["mono8" if encoding == "16UC1" else encoding.replace("16", "8")]
    return narrow.astype(np.uint16) * 257, expected


@pytest.mark.parametrize("encoding", sorted(RAW_ENCODINGS))
@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("bigendian", [False, True])
def test_every_encoding_decodes_to_rgb(encoding: str, padding: int, bigendian: bool) -> None:
    packed, expected = layout_of(RGB, encoding)
    message = pack(np.ascontiguousarray(packed), encoding, padding, bigendian)
    decoded = decode_image(message)
    assert decoded.dtype == np.uint8 and decoded.shape == (5, 7, 3)
    np.testing.assert_array_equal(decoded, expected)


def test_rgb8_is_a_view_over_the_message_data() -> None:
    message = pack(RGB, "rgb8", padding=5, bigendian=False)
    decoded = decode_image(message)
    assert np.shares_memory(decoded, np.frombuffer(message.data, dtype=np.uint8))
    rgba = pack(layout_of(RGB, "rgba8")[0], "rgba8", padding=0, bigendian=False)
    assert np.shares_memory(decode_image(rgba), np.frombuffer(rgba.data, dtype=np.uint8))


def test_data_as_bytes_numpy_or_list_all_decode() -> None:
    message = pack(RGB, "rgb8", padding=0, bigendian=False)
    raw = bytes(message.data)
    for data in (raw, np.frombuffer(raw, dtype=np.uint8), list(raw)):
        message.data = data
        np.testing.assert_array_equal(decode_image(message), RGB)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"step": 20}, "wrong step 20"),
        ({"data": b"\0" * 104}, "truncated data: 104 bytes, expected step x height = 21 x 5"),
        ({"data": b"\0" * 106}, "too much data"),
        ({"height": 0}, "zero size"),
        ({"width": 0}, "zero size"),
        ({"encoding": "yuv422"}, "unknown encoding 'yuv422'"),
        ({"encoding": "RGB8"}, "unknown encoding 'RGB8'"),
        ({"height": 70000, "width": 70000}, "too large"),
    ],
)
def test_bad_raw_images_are_refused_with_the_reason(change: dict, problem: str) -> None:
    message = pack(RGB, "rgb8", padding=0, bigendian=False)
    for name, value in change.items():
        setattr(message, name, value)
    with pytest.raises(ImageDecodeError, match=problem.replace("(", r"\(")):
        decode_image(message)


@pytest.mark.parametrize(
    ("value", "problem"), [(np.nan, "NaN"), (np.inf, "NaN"), (1.5, r"\[0, 1\]")]
)
def test_float_images_must_be_finite_and_in_unit_range(value: float, problem: str) -> None:
    values = np.full((4, 4), 0.5, dtype=np.float32)
    values[2, 1] = value
    with pytest.raises(ImageDecodeError, match=problem):
        decode_image(pack(values, "32FC1", padding=0, bigendian=False))


def compress(image: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_png_decodes_exactly_and_jpeg_closely() -> None:
    png = decode_compressed(FakeCompressed("png", compress(RGB, "PNG")))
    np.testing.assert_array_equal(png, RGB)
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (24, 1, 3))
    jpeg = decode_compressed(
        FakeCompressed("rgb8; jpeg compressed bgr8", compress(smooth, "JPEG", quality=95))
    )
    assert jpeg.shape == (24, 32, 3)
    assert np.abs(jpeg.astype(int) - smooth).max() <= 8


def test_sixteen_bit_png_is_scaled_and_grey_png_becomes_rgb() -> None:
    grey = RGB[..., 0]
    wide = PILImage.fromarray(grey.astype(np.uint16) * 257)
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    decoded = decode_compressed(FakeCompressed("png", buffer.getvalue()))
    np.testing.assert_array_equal(decoded, np.repeat(grey[..., None], 3, axis=2))
    decoded = decode_compressed(FakeCompressed("png", compress(grey, "PNG")))
    np.testing.assert_array_equal(decoded, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (FakeCompressed("jpeg", b""), "empty"),
        (FakeCompressed("jpeg", b"not an image at all"), "corrupt compressed image"),
        (FakeCompressed("jpeg", compress(RGB, "JPEG")[:40]), "corrupt compressed image"),
        (FakeCompressed("tiff", compress(RGB, "TIFF")), "unsupported compressed format 'tiff'"),
        (FakeCompressed("", compress(RGB, "BMP")), "BMP, not JPEG or PNG"),
    ],
)
def test_bad_compressed_images_are_refused(message: FakeCompressed, problem: str) -> None:
    with pytest.raises(ImageDecodeError, match=problem):
        decode_compressed(message)


@pytest.mark.parametrize(
    ("array_", "encoding"),
    [
        (RNG.integers(0, 256, (3, 5), dtype=np.uint8), "mono8"),
        (RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8), "rgb8"),
        (RNG.random((3, 5), dtype=np.float32), "32FC1"),
    ],
)
def test_encode_then_view_round_trips(array_: np.ndarray, encoding: str) -> None:
    encoded = encode_image(array_[:, ::-1])  # a non-contiguous view encodes too
    assert encoded.encoding == encoding
    assert encoded.step == 5 * array_.itemsize * (3 if array_.ndim == 3 else 1)
    np.testing.assert_array_equal(image_view(encoded), array_[:, ::-1])


def test_encode_refuses_unsupported_arrays() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_image(np.zeros((2, 2), dtype=np.int64))


def test_resize_rgb_keeps_dtype_and_skips_same_size() -> None:
    assert resize_rgb(RGB, (10, 14)).shape == (10, 14, 3)
    assert resize_rgb(RGB, (5, 7)) is RGB


raw_fields = st.fixed_dictionaries(
    {
        "height": st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)),
        "width": st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)),
        "encoding": st.one_of(st.sampled_from(sorted(RAW_ENCODINGS)), st.text(max_size=12)),
        "is_bigendian": st.integers(0, 255),
        "step": st.one_of(st.integers(0, 200), st.integers(0, 2**32 - 1)),
        "data": st.binary(max_size=2000),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_fields)
def test_fuzzed_raw_messages_decode_or_raise_decode_error(fields: dict) -> None:
    try:
        image = decode_image(FakeImage(**fields))
    except ImageDecodeError:
        return
    assert image.dtype == np.uint8 and image.shape == (fields["height"], fields["width"], 3)
    assert fields["height"] * fields["width"] <= MAX_PIXELS


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 599), st.sampled_from(["jpeg", "png", ""]))
def test_fuzzed_compressed_messages_decode_or_raise_decode_error(
    noise: bytes, cut: int, fmt: str
) -> None:
    # Real headers followed by noise reach deep into the decoders.
    start = compress(RGB, "PNG" if fmt == "png" else "JPEG")
    data = start[: min(cut, len(start))] + noise
    try:
        image = decode_compressed(FakeCompressed(fmt, data))
    except ImageDecodeError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
