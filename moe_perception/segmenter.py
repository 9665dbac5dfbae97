"""The offline ``Segmenter``: RGB images in, labels and every uncertainty map out."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_perception.checkpoint import CheckpointMetadata, load_checkpoint
from moe_perception.uncertainty import MAP_NAMES, uncertainty_maps

OutputResolution = Literal["input", "network"]


@dataclass(frozen=True)
class Segmentation:
    """The result for one image.

    Attributes:
        labels: class ids, uint8 (H, W).
        maps: uncertainty maps by name (see :data:`MAP_NAMES`), float32 (H, W) in [0, 1].
        gate_entropy: image-level routing uncertainty in [0, 1].
        gate_weights: image-level weight of each expert, float32 (K,), summing to 1.
    """

    labels: np.ndarray
    maps: dict[str, np.ndarray]
    gate_entropy: float
    gate_weights: np.ndarray


def resolve_device(device: str) -> torch.device:
    """``auto`` picks the first CUDA device if there is one, else the CPU.

    Raises:
        ValueError: an unknown device string, or a CUDA device this machine lacks.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from error
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    return resolved


def _check_image(image: np.ndarray, position: int) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image {position}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image {position}: expected uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {position}: expected shape (H, W, 3), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {position}: has zero size {image.shape}")


class Segmenter:
    """Runs a mixture of experts on RGB uint8 images of any size.

    Each image is resized to fit the network input (aspect ratio kept), padded, run in
    one batch, and its fused logits and uncertainty maps are cropped and upsampled back
    together in one interpolation.

    Args:
        model: a model returning :class:`~moe_perception.model.ModelOutput`.
        metadata: its checkpoint metadata (normalisation, input size, temperature).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        fp16: half precision on CUDA (ignored on the CPU, where it is slower).
    """

    def __init__(
        self,
        model: nn.Module,
        metadata: CheckpointMetadata,
        device: str = "auto",
        fp16: bool = False,
    ) -> None:
        self.metadata = metadata
        self.device = resolve_device(device)
        self.dtype = torch.float16 if fp16 and self.device.type == "cuda" else torch.float32
        self.model = model.eval().to(self.device, self.dtype)
        self._mean = torch.tensor(metadata.mean, device=self.device).view(3, 1, 1) * 255.0
        self._std = torch.tensor(metadata.std, device=self.device).view(3, 1, 1) * 255.0

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", fp16: bool = False
    ) -> Segmenter:
        """Load a checkpoint (see :func:`moe_perception.checkpoint.load_checkpoint`)."""
        model, metadata = load_checkpoint(path)
        return cls(model, metadata, device, fp16)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.metadata.class_names

    @property
    def expert_names(self) -> tuple[str, ...]:
        names = self.metadata.expert_names
        return names or tuple(f"expert_{i}" for i in range(self.metadata.arch.num_experts))

    def _prepare(self, image: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
        """Normalised (3, h, w) image scaled to fit the network input, and (h, w)."""
        net_h, net_w = self.metadata.input_size
        height, width = image.shape[:2]
        scale = min(net_h / height, net_w / width)
        size = (
            max(1, min(net_h, round(height * scale))),
            max(1, min(net_w, round(width * scale))),
        )
        with warnings.catch_warnings():
            # Read-only input (a zero-copy view of a ROS message) is only read: the
            # float conversion below makes the tensor we work on.
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            tensor = torch.from_numpy(image).to(self.device).permute(2, 0, 1).float()
        tensor = (tensor - self._mean) / self._std
        if size != (height, width):
            tensor = F.interpolate(
                tensor[None], size=size, mode="bilinear", align_corners=False, antialias=True
            )[0]
        return tensor, size

    @torch.inference_mode()
    def __call__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        maps: Sequence[str] = MAP_NAMES,
        resolution: OutputResolution = "input",
    ) -> Segmentation | list[Segmentation]:
        """Segment one image (H, W, 3) or a batch (a list, or an (N, H, W, 3) array).

        Args:
            images: RGB uint8 images, any sizes.
            maps: which uncertainty maps to return (fewer is cheaper to upsample).
            resolution: ``input`` returns everything at each image's size; ``network``
                at the network's (cropped) resolution.

        Returns:
            One :class:`Segmentation` for a single image, else a list in input order.

        Raises:
            ValueError, TypeError: an image that is not RGB uint8 with non-zero size, or
                an unknown map name.
        """
        single = isinstance(images, np.ndarray) and images.ndim == 3
        batch = [images] if single else list(images)
        if not batch:
            return []
        unknown = sorted(set(maps) - set(MAP_NAMES))
        if unknown:
            raise ValueError(f"unknown uncertainty maps {unknown}; choose from {MAP_NAMES}")
        for position, image in enumerate(batch):
            _check_image(image, position)
        net_h, net_w = self.metadata.input_size
        inputs = torch.zeros(len(batch), 3, net_h, net_w, device=self.device)
        sizes = []
        for i, image in enumerate(batch):
            tensor, (h, w) = self._prepare(image)
            inputs[i, :, :h, :w] = tensor
            sizes.append((h, w))
        output = self.model(inputs.to(self.dtype))
        temperature = self.metadata.temperature
        result = uncertainty_maps(output, temperature)
        logits = output.logits.float()
        stacked = torch.cat(
            [logits] + [getattr(result, name).unsqueeze(1) for name in maps], dim=1
        )
        segmentations = []
        for i, (image, (h, w)) in enumerate(zip(batch, sizes)):
            planes = stacked[i : i + 1, :, :h, :w]
            if resolution == "input" and (h, w) != image.shape[:2]:
                planes = F.interpolate(
                    planes, size=image.shape[:2], mode="bilinear", align_corners=False
                )
            planes = planes[0]
            c = logits.shape[1]
            # max(dim).indices: the same first-maximum rule as argmax, several times faster
            # on the CPU over the class dimension.
            labels = planes[:c].max(dim=0).indices.to(torch.uint8).cpu().numpy()
            values = planes[c:].clamp(0.0, 1.0).cpu().numpy()
            # Image-level routing over the image itself, not the padding.
            weights = output.gate_weights[i].float()
            if weights.shape[-1] > 1:
                # Per-pixel weights are at the decoder's resolution: crop the padding there.
                rows = math.ceil(h * weights.shape[-2] / net_h)
                weights = weights[:, :rows, : math.ceil(w * weights.shape[-1] / net_w)]
            segmentations.append(
                Segmentation(
                    labels=labels,
                    maps={name: values[j] for j, name in enumerate(maps)},
                    gate_entropy=float(result.gate_entropy[i, :h, :w].mean()),
                    gate_weights=weights.mean(dim=(1, 2)).cpu().numpy(),
                )
            )
        return segmentations[0] if single else segmentations
