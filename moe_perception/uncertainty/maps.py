"""All uncertainty maps of a model result, in one pass over the probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from moe_perception.model import ModelOutput
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

    Attributes:
        probs: the gate-weighted mixture of expert probabilities, (B, C, H, W).
        predictive_entropy: entropy of ``probs`` / ln C.
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

    Equal (to float rounding) to the pure functions in
    :mod:`moe_perception.uncertainty.functional` applied to
    ``softmax(expert_logits / temperature)`` and ``output.gate_weights``, but in one pass:
    the pixels are processed in blocks, each with one exp per expert logit and one log per
    mixture probability, so no full-size temporary is created besides the outputs.

    Args:
        output: a model result.
        temperature: divides the logits before the softmax (calibration).

    Shape:
        - output.expert_logits: (B, K, C, H, W); output.gate_weights broadcastable to
          (B, K, H, W).
        - Every map: (B, H, W).
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
    step = _block_pixels(expert_logits, pixels)
    if step >= pixels:
        parts = _block(logits, flat_weights, temperature)
    else:
        parts = []
        for start in range(0, pixels, step):
            stop = min(start + step, pixels)
            block_weights = flat_weights[..., start:stop] if per_pixel else flat_weights
            block = _block(logits[..., start:stop], block_weights, temperature)
            if not parts:
                parts = [p.new_empty(*p.shape[:-1], pixels) for p in block]
            for part, value in zip(parts, block):
                part[..., start:stop] = value
    mixture, entropy, information, variance, top = parts[:5]
    log_c = math.log(c)
    shape = (batch, height, width)
    if per_pixel and k > 1:
        routing = parts[5].div_(math.log(k)).clamp_(0.0, 1.0).view(shape)
    else:
        routing = gate_entropy(weights).expand(shape)
    # The blocks' results are fresh tensors: normalise them in place.
    return UncertaintyMaps(
        probs=mixture.view(batch, c, height, width),
        predictive_entropy=entropy.div_(log_c).clamp_(0.0, 1.0).view(shape),
        mutual_information=information.div_(log_c).clamp_(0.0, 1.0).view(shape),
        expert_variance=variance.div_(0.25).clamp_(0.0, 1.0).view(shape),
        gate_entropy=routing,
        max_softmax=top.neg_().add_(1.0).clamp_(0.0, 1.0).view(shape),
        image_gate_entropy=routing.mean(dim=(1, 2)),
        image_gate_weights=output.image_gate_weights.float(),
    )
