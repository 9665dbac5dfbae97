"""Image corruptions for out-of-distribution tests: seven kinds, five severities each.

Every corruption maps an RGB uint8 image (H, W, 3) to another of the same shape and
dtype and is deterministic: its randomness (noise, fog pattern, blur direction) comes
from :func:`corruption_seed` of a seed and a key such as the frame's name, so a frame
is corrupted the same way in every run and on every machine. Severity 0 is the
identity. Blur sizes scale with the image (relative to a 224-pixel short side, the
scale the ImageNet-C severities were set for).
"""

from __future__ import annotations

import io
import zlib
from typing import Literal

import numpy as np

CorruptionName = Literal[
    "gaussian_noise", "defocus_blur", "motion_blur", "fog", "darken", "contrast", "jpeg"
]
CORRUPTIONS: tuple[CorruptionName, ...] = (
    "gaussian_noise",
    "defocus_blur",
    "motion_blur",
    "fog",
    "darken",
    "contrast",
    "jpeg",
)
SEVERITIES = (1, 2, 3, 4, 5)

# Parameters per severity 1..5.
_NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)  # of the [0, 1] range
_DEFOCUS_RADIUS = (1.5, 2.5, 3.5, 5.0, 7.0)  # pixels at a 224-pixel short side
_MOTION_LENGTH = (5.0, 8.0, 11.0, 15.0, 20.0)  # pixels at a 224-pixel short side
_FOG_DENSITY = (0.3, 0.45, 0.6, 0.7, 0.8)
_DARKEN = ((1.2, 0.8), (1.4, 0.65), (1.6, 0.5), (1.8, 0.38), (2.0, 0.28))  # (gamma, gain)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_JPEG_QUALITY = (25, 18, 15, 10, 7)


def corruption_seed(seed: int, key: str) -> int:
    """A 32-bit seed from a run seed and a frame key (stable across processes)."""
    return zlib.crc32(f"{seed}:{key}".encode()) & 0xFFFFFFFF


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel of a float (H, W, 3) image; edges replicate."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[:, None].float()
    kh, kw = kernel.shape
    padded = F.pad(
        tensor, (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2), mode="replicate"
    )
    weight = torch.from_numpy(kernel.astype(np.float32))[None, None]
    out = F.conv2d(padded, weight)[:, 0]
    return out.numpy().transpose(1, 2, 0)


def _disk(radius: float) -> np.ndarray:
    size = int(np.ceil(radius))
    y, x = np.mgrid[-size : size + 1, -size : size + 1]
    kernel = ((x**2 + y**2) <= radius**2).astype(np.float64)
    return kernel / kernel.sum()


def _line(length: float, angle: float) -> np.ndarray:
    size = max(int(np.ceil(length)), 1) | 1  # odd
    kernel = np.zeros((size, size))
    centre = size // 2
    for t in np.linspace(-length / 2, length / 2, 4 * size):
        x = int(round(centre + t * np.cos(angle)))
        y = int(round(centre + t * np.sin(angle)))
        if 0 <= x < size and 0 <= y < size:
            kernel[y, x] = 1.0
    return kernel / kernel.sum()


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in [0, 1]: octaves of random grids, bilinearly upsampled."""
    import torch
    import torch.nn.functional as F

    height, width = shape
    field = torch.zeros(height, width)
    amplitude = 1.0
    for cells in (2, 4, 8, 16):
        grid = torch.from_numpy(rng.random((cells + 1, cells + 1))).float()
        up = F.interpolate(grid[None, None], size=shape, mode="bilinear", align_corners=True)
        field += amplitude * up[0, 0]
        amplitude /= 2
    field -= field.min()
    return (field / field.max().clamp(min=1e-6)).numpy()


def corrupt(
    image: np.ndarray, name: CorruptionName, severity: int, seed: int = 0, key: str = ""
) -> np.ndarray:
    """Apply one corruption.

    Args:
        image: RGB uint8 (H, W, 3).
        name: one of :data:`CORRUPTIONS`.
        severity: 0 (unchanged) to 5.
        seed: run seed.
        key: per-frame key (e.g. the frame's name) mixed into the seed.

    Returns:
        The corrupted image, RGB uint8 (H, W, 3).

    Raises:
        ValueError: an unknown corruption, a severity outside 0..5, or an image that is
            not RGB uint8.

    Shape:
        - image: (H, W, 3); output: (H, W, 3).
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {CORRUPTIONS}")
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity must be 0..5, got {severity}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    if severity == 0:
        return image.copy()
    level = severity - 1
    rng = np.random.default_rng(corruption_seed(seed, f"{name}:{severity}:{key}"))
    x = image.astype(np.float64) / 255.0
    scale = min(image.shape[:2]) / 224.0
    if name == "gaussian_noise":
        return _to_uint8(x + rng.normal(0.0, _NOISE_SIGMA[level], x.shape))
    if name == "defocus_blur":
        return _to_uint8(_convolve(x, _disk(max(_DEFOCUS_RADIUS[level] * scale, 1.0))))
    if name == "motion_blur":
        angle = rng.uniform(0.0, np.pi)
        return _to_uint8(_convolve(x, _line(max(_MOTION_LENGTH[level] * scale, 2.0), angle)))
    if name == "fog":
        density = _FOG_DENSITY[level] * (0.5 + 0.5 * _smooth_field(image.shape[:2], rng))
        density = density[..., None]
        return _to_uint8(x * (1.0 - density) + 0.85 * density)
    if name == "darken":
        gamma, gain = _DARKEN[level]
        return _to_uint8(gain * x**gamma)
    if name == "contrast":
        mean = x.mean(axis=(0, 1), keepdims=True)
        return _to_uint8((x - mean) * _CONTRAST[level] + mean)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=_JPEG_QUALITY[level])
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()
