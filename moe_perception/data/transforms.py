"""Resizing, augmentation and normalisation of (image, label) pairs as tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from moe_perception.data.common import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[Tensor, Tensor]:
    """RGB uint8 (H, W, 3) and ids (H, W) -> float (3, H, W) in [0, 1] and long (H, W)."""
    image_t = torch.tensor(image).permute(2, 0, 1).float() / 255.0
    return image_t, torch.tensor(label).long()


def resize_pair(image: Tensor, label: Tensor, size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Resize (3, H, W) bilinearly and its label (H, W) by nearest neighbour."""
    size = (int(size[0]), int(size[1]))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, label


def random_scale_crop_flip(
    image: Tensor,
    label: Tensor,
    base_size: Sequence[int],
    crop_size: Sequence[int],
    scale_range: tuple[float, float],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Training augmentation: rescale around ``base_size``, random crop, horizontal flip.

    Where the scaled image is smaller than the crop, it is padded with zeros and the
    label with the ignore index.
    """
    low, high = scale_range
    scale = low + (high - low) * torch.rand((), generator=generator).item()
    size = (round(base_size[0] * scale), round(base_size[1] * scale))
    image, label = resize_pair(image, label, size)
    crop_h, crop_w = int(crop_size[0]), int(crop_size[1])
    pad_h, pad_w = max(crop_h - size[0], 0), max(crop_w - size[1], 0)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))
        label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    top = int(torch.randint(0, image.shape[1] - crop_h + 1, (), generator=generator))
    left = int(torch.randint(0, image.shape[2] - crop_w + 1, (), generator=generator))
    image = image[:, top : top + crop_h, left : left + crop_w]
    label = label[top : top + crop_h, left : left + crop_w]
    if torch.rand((), generator=generator).item() < 0.5:
        image, label = image.flip(-1), label.flip(-1)
    return image, label


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Normalise (..., 3, H, W) images in [0, 1] per channel."""
    mean_t = images.new_tensor(mean).view(3, 1, 1)
    std_t = images.new_tensor(std).view(3, 1, 1)
    return (images - mean_t) / std_t
