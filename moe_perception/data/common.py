"""Shared pieces of the dataset readers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class SegmentationSample:
    """One labelled frame: RGB uint8 (H, W, 3), class ids uint8 (H, W) with 255 = ignore."""

    image: np.ndarray
    label: np.ndarray
    name: str


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("RGB"))  # writable: torch.from_numpy needs that


def read_mask(path: str | Path) -> np.ndarray:
    """Read a single-channel label PNG as uint8 (H, W)."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"label {path} is not single-channel (mode {image.mode})")
        return np.asarray(image).astype(np.uint8)
