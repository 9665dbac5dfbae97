"""All uncertainty maps of a model result, in one pass over the probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from moe_perception.model import ModelOutput
from moe_perception.uncertainty.functional import gate_entropy

MAP_NAMES = ("predictive_entropy", "mutual_information", "expert_variance", "gate_entropy")


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


def uncertainty_maps(output: ModelOutput, temperature: float = 1.0) -> UncertaintyMaps:
    """Compute every map from a model result with one softmax over the expert logits.

    Equal to the pure functions in :mod:`moe_perception.uncertainty.functional` applied
    to ``softmax(expert_logits / temperature)`` and ``output.gate_weights``, but sharing
    the log-probabilities, the mixture and its entropy between the maps.

    Args:
        output: a model result.
        temperature: divides the logits before the softmax (calibration).

    Shape:
        - output.expert_logits: (B, K, C, H, W); output.gate_weights broadcastable to
          (B, K, H, W).
        - Every map: (B, H, W).
    """
    expert_logits = output.expert_logits.float()
    if temperature != 1.0:
        expert_logits = expert_logits / temperature
    batch, k, c, height, width = expert_logits.shape
    weights = output.gate_weights.float()
    log_probs = expert_logits.log_softmax(dim=2)
    probs = log_probs.exp()
    expected_entropy = -(weights * (probs * log_probs).sum(dim=2)).sum(dim=1)
    mixture = (weights.unsqueeze(2) * probs).sum(dim=1)
    entropy = -torch.special.xlogy(mixture, mixture).sum(dim=1)
    top, predicted = mixture.max(dim=1, keepdim=True)
    index = predicted.unsqueeze(1).expand(-1, k, -1, -1, -1)
    expert_top = probs.gather(2, index).squeeze(2)
    variance = (weights * (expert_top - top) ** 2).sum(dim=1)
    log_c = math.log(c)
    routing = gate_entropy(weights).expand(batch, height, width)
    return UncertaintyMaps(
        probs=mixture,
        predictive_entropy=(entropy / log_c).clamp(0.0, 1.0),
        mutual_information=((entropy - expected_entropy) / log_c).clamp(0.0, 1.0),
        expert_variance=(variance / 0.25).clamp(0.0, 1.0),
        gate_entropy=routing,
        max_softmax=1.0 - top.squeeze(1),
        image_gate_entropy=routing.mean(dim=(1, 2)),
        image_gate_weights=output.image_gate_weights.float(),
    )
