"""The mixture of experts and its baselines, all returning one typed :class:`ModelOutput`.

Fusion: the fused logits are the gate-weighted sum of the expert logits (as in the
paper), so labels come from ``argmax(fused logits)``. The uncertainty maths instead uses
the gate-weighted mixture of expert *probabilities*, ``p = sum_k w_k softmax(z_k)``
(see :mod:`moe_perception.uncertainty`). Everything is fused at a quarter of the input
resolution and upsampled once, bilinearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_perception.model.experts import Expert
from moe_perception.model.gates import Gate, GateKind


@dataclass(frozen=True)
class ModelOutput:
    """What every model returns.

    Attributes:
        logits: fused logits, (B, C, H, W).
        expert_logits: logits of each expert (or MC-dropout sample), (B, K, C, H, W).
        gate_weights: per-expert weights broadcastable to (B, K, H, W): (B, K, 1, 1) for
            image-level weights, (B, K, H, W) for the spatial gate and, for the classwise
            gate, the weights of each pixel's predicted class.
        class_gate_weights: the classwise gate's full weights (B, K, C), else ``None``.
    """

    logits: Tensor
    expert_logits: Tensor
    gate_weights: Tensor
    class_gate_weights: Tensor | None = None

    @property
    def image_gate_weights(self) -> Tensor:
        """Image-level weight of each expert, (B, K): the mean over pixels."""
        return self.gate_weights.mean(dim=(2, 3))


def _upsample(tensor: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def _upsample_together(size: tuple[int, int], *tensors: Tensor) -> list[Tensor]:
    """Upsample several (B, n_i, h, w) tensors in one interpolation call."""
    splits = [t.shape[1] for t in tensors]
    return list(_upsample(torch.cat(tensors, dim=1), size).split(splits, dim=1))


class MixtureOfExperts(nn.Module):
    """K DeepLabv3+ experts fused by a gate that reads their decoder features.

    Args:
        experts: K >= 2 experts with the same classes and feature width.
        gate_kind: ``simple``, ``classwise`` or ``spatial``.
        gate_conv: refine the fused logits with a residual 3x3 convolution (``+conv``).
        gate_hidden_channels: width of the gate.
        gate_bottleneck: the gate squeezes the features with a 1x1 convolution first.

    Shape:
        - Input: (B, 3, H, W), normalised, H and W divisible by 16.
        - Output: :class:`ModelOutput` at (H, W).
    """

    def __init__(
        self,
        experts: list[Expert],
        gate_kind: GateKind = "simple",
        gate_conv: bool = False,
        gate_hidden_channels: int = 64,
        gate_bottleneck: bool = True,
    ) -> None:
        super().__init__()
        if len(experts) < 2:
            raise ValueError(f"a mixture needs at least 2 experts, got {len(experts)}")
        self.experts = nn.ModuleList(experts)
        num_classes = experts[0].head.out_channels
        self.gate = Gate(
            gate_kind,
            num_experts=len(experts),
            num_classes=num_classes,
            in_channels=sum(e.feature_channels for e in experts),
            hidden_channels=gate_hidden_channels,
            bottleneck=gate_bottleneck,
        )
        self.refine: nn.Conv2d | None = None
        if gate_conv:
            self.refine = nn.Conv2d(num_classes, num_classes, 3, padding=1)
            # Start as the identity so the refinement only learns a correction.
            nn.init.zeros_(self.refine.weight)
            nn.init.zeros_(self.refine.bias)

    def forward(self, images: Tensor) -> ModelOutput:
        features, logits = zip(*(expert(images) for expert in self.experts))
        expert_logits = torch.stack(logits, dim=1)  # (B, K, C, h, w)
        weights = self.gate(torch.cat(features, dim=1))
        batch, k, c, h, w = expert_logits.shape
        size = (images.shape[2], images.shape[3])
        flat_experts = expert_logits.flatten(1, 2)
        class_weights = None
        if self.gate.kind == "spatial":
            # Per-pixel weights do not commute with upsampling: fuse at full resolution
            # so that the fused logits are exactly the weighted sum of what is returned.
            low_weights = weights
            flat_experts, weights = _upsample_together(size, flat_experts, weights)
            fused = (weights.unsqueeze(2) * flat_experts.view(batch, k, c, *size)).sum(dim=1)
            if self.refine is not None:
                low_fused = (low_weights.unsqueeze(2) * expert_logits).sum(dim=1)
                fused = fused + _upsample(self.refine(low_fused), size)
        else:
            # Image-level weights commute with upsampling: fuse small, upsample once.
            broadcast = weights if self.gate.kind == "classwise" else weights.unsqueeze(2)
            fused = (broadcast * expert_logits).sum(dim=1)
            if self.refine is not None:
                fused = fused + self.refine(fused)
            fused, flat_experts = _upsample_together(size, fused, flat_experts)
        if self.gate.kind == "classwise":
            class_weights = weights.view(batch, k, c)
            # max(dim).indices: argmax's first-maximum rule, several times faster on the CPU.
            predicted = fused.max(dim=1).indices.flatten(1)  # (B, H*W)
            index = predicted.unsqueeze(1).expand(batch, k, -1)
            weights = class_weights.gather(2, index).view(batch, k, *size)
        return ModelOutput(
            logits=fused,
            expert_logits=flat_experts.view(batch, k, c, *size),
            gate_weights=weights,
            class_gate_weights=class_weights,
        )


class Ensemble(nn.Module):
    """Uniform average of the same experts: the baseline an MoE must beat.

    Shape:
        - Input: (B, 3, H, W).
        - Output: :class:`ModelOutput` with gate weights 1/K, (B, K, 1, 1).
    """

    def __init__(self, experts: list[Expert]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)

    def forward(self, images: Tensor) -> ModelOutput:
        logits = torch.stack([expert(images)[1] for expert in self.experts], dim=1)
        batch, k, c, h, w = logits.shape
        size = (images.shape[2], images.shape[3])
        expert_logits = _upsample(logits.flatten(1, 2), size).view(batch, k, c, *size)
        weights = logits.new_full((batch, k, 1, 1), 1.0 / k)
        return ModelOutput(expert_logits.mean(dim=1), expert_logits, weights)


class SingleExpert(Ensemble):
    """One expert alone, in the same interface (K = 1, gate weight 1)."""

    def __init__(self, expert: Expert) -> None:
        super().__init__([expert])


class MCDropout(nn.Module):
    """Monte Carlo dropout over one expert: N stochastic passes, uniform weights.

    Dropout layers are switched on for the passes while batch norm keeps whatever mode
    the module is in (frozen in eval). The encoder has no dropout, so it runs once and
    only the decoder and head are sampled.

    Shape:
        - Input: (B, 3, H, W).
        - Output: :class:`ModelOutput` with K = samples.
    """

    def __init__(self, expert: Expert, samples: int = 10) -> None:
        super().__init__()
        if samples < 2:
            raise ValueError(f"MC dropout needs at least 2 samples, got {samples}")
        self.experts = nn.ModuleList([expert])
        self.samples = samples

    def forward(self, images: Tensor) -> ModelOutput:
        expert = self.experts[0]
        dropouts = [m for m in expert.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        modes = [m.training for m in dropouts]
        for module in dropouts:
            module.train(True)
        try:
            encoded = expert.encoder(images)
            logits = torch.stack(
                [expert.head(expert.decoder(encoded)) for _ in range(self.samples)], dim=1
            )
        finally:
            for module, mode in zip(dropouts, modes):
                module.train(mode)
        batch, k, c, h, w = logits.shape
        size = (images.shape[2], images.shape[3])
        expert_logits = _upsample(logits.flatten(1, 2), size).view(batch, k, c, *size)
        weights = logits.new_full((batch, k, 1, 1), 1.0 / k)
        return ModelOutput(expert_logits.mean(dim=1), expert_logits, weights)
