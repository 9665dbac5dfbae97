"""The mixture of experts and its baselines, all returning one typed :class:`ModelOutput`.

Fusion: the fused logits are the gate-weighted sum of the expert logits (as in the
paper), so labels come from ``argmax(fused logits)``. The uncertainty maths instead uses
the gate-weighted mixture of expert *probabilities*, ``p = sum_k w_k softmax(z_k)``
(see :mod:`moe_perception.uncertainty`).

Resolution: the experts' decoders predict at a quarter of the input resolution, and
everything is fused there. Only the fused logits (what the labels come from) are
upsampled, once, bilinearly, to the input resolution; the expert logits and gate weights
stay at the decoder's resolution, where the uncertainty maps are computed before they
are upsampled in turn (16 times fewer pixels to take a softmax and a logarithm of).
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
        logits: fused logits at the output resolution, (B, C, H, W).
        expert_logits: logits of each expert (or MC-dropout sample) at the decoder's
            resolution, (B, K, C, h, w) (h = H / 4 for the models here; equal sizes are
            allowed).
        gate_weights: per-expert weights broadcastable to (B, K, h, w): (B, K, 1, 1) for
            image-level weights, (B, K, h, w) for the spatial gate and, for the classwise
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


def upsample(tensor: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling (half-pixel centres), the one used everywhere in the package.

    Shape:
        - tensor: (B, n, h, w).
        - Output: (B, n, *size).
    """
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def bilinear_taps(
    in_size: tuple[int, int], out_size: tuple[int, int], rows: Tensor, cols: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The four input pixels and weights that :func:`upsample` blends into each output pixel.

    For the few pixels where an upsampled value must be recomputed exactly (e.g. in log
    space), without upsampling everything.

    Args:
        in_size: (h, w) of the upsampled tensor.
        out_size: (H, W) it is upsampled to.
        rows, cols: output pixel coordinates.

    Returns:
        Input rows, input columns and bilinear weights (summing to 1 per pixel).

    Shape:
        - rows, cols: (n,).
        - Output: three (n, 4) tensors.
    """

    def axis(dst: Tensor, n_in: int, n_out: int) -> tuple[Tensor, Tensor, Tensor]:
        # Half-pixel centres, clamped at the first pixel: align_corners=False.
        src = ((dst.double() + 0.5) * (n_in / n_out) - 0.5).clamp_min(0.0)
        low = src.floor().long().clamp_max(n_in - 1)
        return low, (low + 1).clamp_max(n_in - 1), src - low

    y0, y1, fy = axis(rows, in_size[0], out_size[0])
    x0, x1, fx = axis(cols, in_size[1], out_size[1])
    tap_rows = torch.stack([y0, y0, y1, y1], dim=1)
    tap_cols = torch.stack([x0, x1, x0, x1], dim=1)
    weights = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], dim=1)
    return tap_rows, tap_cols, weights.float()


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
        - Output: :class:`ModelOutput`, logits at (H, W), the rest at (H / 4, W / 4).
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
        # (B, K, 1, 1), (B, K, C, 1, 1) or (B, K, h, w): broadcast against the logits.
        broadcast = weights if self.gate.kind == "classwise" else weights.unsqueeze(2)
        fused = (broadcast * expert_logits).sum(dim=1)
        if self.refine is not None:
            fused = fused + self.refine(fused)
        class_weights = None
        if self.gate.kind == "classwise":
            class_weights = weights.view(batch, k, c)
            # max(dim).indices: argmax's first-maximum rule, several times faster on the CPU.
            predicted = fused.max(dim=1).indices.flatten(1)  # (B, h*w)
            index = predicted.unsqueeze(1).expand(batch, k, -1)
            weights = class_weights.gather(2, index).view(batch, k, h, w)
        return ModelOutput(
            logits=upsample(fused, (images.shape[2], images.shape[3])),
            expert_logits=expert_logits,
            gate_weights=weights,
            class_gate_weights=class_weights,
        )


def _uniform_output(expert_logits: Tensor, size: tuple[int, int]) -> ModelOutput:
    """Mean of (B, K, C, h, w) logits upsampled to ``size``, with weights 1/K."""
    batch, k = expert_logits.shape[:2]
    weights = expert_logits.new_full((batch, k, 1, 1), 1.0 / k)
    return ModelOutput(upsample(expert_logits.mean(dim=1), size), expert_logits, weights)


class Ensemble(nn.Module):
    """Uniform average of the same experts: the baseline an MoE must beat.

    Shape:
        - Input: (B, 3, H, W).
        - Output: :class:`ModelOutput` (logits at (H, W), expert logits at (H / 4, W / 4))
          with gate weights 1/K, (B, K, 1, 1).
    """

    def __init__(self, experts: list[Expert]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)

    def forward(self, images: Tensor) -> ModelOutput:
        logits = torch.stack([expert(images)[1] for expert in self.experts], dim=1)
        return _uniform_output(logits, (images.shape[2], images.shape[3]))


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
        - Output: :class:`ModelOutput` with K = samples (resolutions as :class:`Ensemble`).
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
        return _uniform_output(logits, (images.shape[2], images.shape[3]))
