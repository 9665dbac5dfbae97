"""All uncertainty maps of a model result, in one pass over the probabilities at the
decoder's resolution, upsampled once."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from moe_perception.model import ModelOutput, upsample
from moe_perception.uncertainty.functional import gate_entropy

MAP_NAMES = ("predictive_entropy", "mutual_information", "expert_variance", "gate_entropy")

# Pixels per block. On the CPU a block's few temporaries (K*C*block floats each) stay in
# cache and no temporary is ever full size; on CUDA large blocks keep the kernel count low.
_CPU_BLOCK_PIXELS = 1 << 14
_CUDA_BLOCK_PIXELS = 1 << 20
_TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class UncertaintyMaps:
    """Per-pixel uncertainty of one batch; every map is (B, H, W) in [0, 1].

    Everything but ``max_softmax`` is computed at the decoder's resolution and upsampled
    bilinearly (see :func:`uncertainty_maps`).

    Attributes:
        probs: the gate-weighted mixture of expert probabilities, (B, C, H, W).
        predictive_entropy: entropy of the mixture / ln C.
        mutual_information: disagreement between experts / ln C.
        expert_variance: weighted variance of the predicted class's probability / 0.25.
        gate_entropy: routing uncertainty / ln K.
        max_softmax: 1 - max_c p_c.
        image_gate_entropy: the mean of ``gate_entropy`` per image, (B,).
        image_gate_weights: mean gate weight of each expert per image, (B, K).
    """

    probs: Tensor
    predictive_entropy: Tensor
    mutual_information: Tensor
    expert_variance: Tensor
    gate_entropy: Tensor
    max_softmax: Tensor
    image_gate_entropy: Tensor
    image_gate_weights: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        """The four published maps by name."""
        return {name: getattr(self, name) for name in MAP_NAMES}


def _block(logits: Tensor, weights: Tensor, temperature: float) -> list[Tensor]:
    """Unnormalised maps of one block of pixels, with one exp and one log per value.

    The expert entropies use ``H(p_k) = ln sum_c e^{s_c} - sum_c p_c s_c`` with ``s`` the
    max-shifted logits, so no log-probabilities are formed; the predicted class is the
    first class reaching the maximum (argmax's rule), found with fast min/max reductions.

    Shape:
        - logits: (B, K, C, n); weights: (B, K, n) or (B, K, 1).
        - Output: mixture (B, C, n); entropy, information, variance, top and routing
          (B, n) (routing only for per-pixel weights).
    """
    shifted = logits.float()
    shifted = shifted - shifted.amax(dim=2, keepdim=True)
    if temperature != 1.0:
        shifted = shifted.div_(temperature)
    probs = shifted.exp()
    total = probs.sum(dim=2)  # (B, K, n), >= 1
    expert_entropy = total.log() - torch.linalg.vecdot(probs, shifted, dim=2) / total
    probs = probs.div_(total.unsqueeze(2))
    mixture = (weights.unsqueeze(2) * probs).sum(dim=1)  # (B, C, n)
    entropy = -torch.linalg.vecdot(mixture, mixture.clamp_min(_TINY).log(), dim=1)
    top = mixture.amax(dim=1, keepdim=True)  # (B, 1, n)
    classes = torch.arange(mixture.shape[1], device=mixture.device, dtype=mixture.dtype)
    first = torch.where(mixture == top, classes.view(1, -1, 1), mixture.shape[1])
    predicted = first.amin(dim=1).long()  # (B, n)
    index = predicted[:, None, None, :].expand(-1, probs.shape[1], 1, -1)
    expert_top = probs.gather(2, index).squeeze(2)  # (B, K, n)
    variance = (weights * (expert_top - top).square()).sum(dim=1)
    information = entropy - (weights * expert_entropy).sum(dim=1)
    maps = [mixture, entropy, information, variance, top.squeeze(1)]
    if weights.shape[-1] > 1:
        maps.append(-torch.linalg.vecdot(weights, weights.clamp_min(_TINY).log(), dim=1))
    return maps


def _block_pixels(tensor: Tensor, pixels: int) -> int:
    if torch.compiler.is_compiling():
        return pixels  # the compiler fuses the whole computation itself
    return _CUDA_BLOCK_PIXELS if tensor.is_cuda else _CPU_BLOCK_PIXELS


def uncertainty_maps(output: ModelOutput, temperature: float = 1.0) -> UncertaintyMaps:
    """Compute every map from a model result with one softmax over the expert logits.

    The maps are computed where the experts predict, at the resolution of
    ``output.expert_logits`` (the decoder's, a quarter of the input's), and upsampled
    once, bilinearly and together, to the resolution of ``output.logits``. At the
    decoder's resolution they equal (to float rounding) the pure functions in
    :mod:`moe_perception.uncertainty.functional` applied to
    ``softmax(expert_logits / temperature)`` and ``output.gate_weights``; the pixels are
    processed in blocks, each with one exp per expert logit and one log per mixture
    probability, so no temporary as large as the expert logits is created. Bilinear
    weights are non-negative and sum to 1, so the upsampled ``probs`` are still
    distributions and the upsampled maps stay in [0, 1]. ``max_softmax`` is read off the
    upsampled ``probs``, so it agrees with them exactly.

    Args:
        output: a model result.
        temperature: divides the logits before the softmax (calibration).

    Shape:
        - output.expert_logits: (B, K, C, h, w); output.gate_weights broadcastable to
          (B, K, h, w); output.logits: (B, C, H, W).
        - probs: (B, C, H, W); every map: (B, H, W).
    """
    expert_logits = output.expert_logits
    batch, k, c, height, width = expert_logits.shape
    pixels = height * width
    weights = output.gate_weights.float()
    per_pixel = weights.shape[2] * weights.shape[3] > 1
    if per_pixel:
        flat_weights = weights.expand(batch, k, height, width).reshape(batch, k, pixels)
    else:
        flat_weights = weights.reshape(batch, k, 1)
    logits = expert_logits.reshape(batch, k, c, pixels)
    # Channels of one low-resolution buffer, upsampled together: the mixture's C
    # probabilities, entropy, information, variance and (per-pixel gates) routing.
    channels = c + 3 + int(per_pixel)
    low = expert_logits.new_empty(batch, channels, pixels, dtype=torch.float32)
    step = min(_block_pixels(expert_logits, pixels), pixels)
    for start in range(0, pixels, step):
        stop = min(start + step, pixels)
        block_weights = flat_weights[..., start:stop] if per_pixel else flat_weights
        mixture, *scalars = _block(logits[..., start:stop], block_weights, temperature)
        low[:, :c, start:stop] = mixture
        # _block's "top" (4th scalar) only served the variance.
        for offset, value in enumerate(scalars[:3] + scalars[4:]):
            low[:, c + offset, start:stop] = value
    # Normalise before upsampling: both are per-pixel convex or linear, so they commute.
    low[:, c : c + 2].div_(math.log(c))
    low[:, c + 2].div_(0.25)
    if per_pixel and k > 1:
        low[:, c + 3].div_(math.log(k))
    low[:, c:].clamp_(0.0, 1.0)
    size = (output.logits.shape[-2], output.logits.shape[-1])
    planes = upsample(low.view(batch, channels, height, width), size)
    # Slices of one batch are contiguous already; those of a batch of several are copied,
    # so that every result is a plain tensor.
    probs = planes[:, :c].contiguous()
    if per_pixel and k > 1:
        routing = planes[:, c + 3].contiguous()
    else:
        routing = gate_entropy(weights).expand(batch, *size)
    return UncertaintyMaps(
        probs=probs,
        predictive_entropy=planes[:, c].contiguous(),
        mutual_information=planes[:, c + 1].contiguous(),
        expert_variance=planes[:, c + 2].contiguous(),
        gate_entropy=routing,
        max_softmax=probs.amax(dim=1).neg_().add_(1.0).clamp_(0.0, 1.0),
        image_gate_entropy=routing.mean(dim=(1, 2)),
        image_gate_weights=output.image_gate_weights.float(),
    )
