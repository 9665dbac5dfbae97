"""Uncertainty maps of a mixture of experts: pure functions and a one-pass helper."""

from moe_perception.uncertainty.functional import (
    expert_variance,
    gate_entropy,
    max_softmax_uncertainty,
    mixture_probs,
    mutual_information,
    predictive_entropy,
)
from moe_perception.uncertainty.maps import MAP_NAMES, UncertaintyMaps, uncertainty_maps

__all__ = [
    "MAP_NAMES",
    "UncertaintyMaps",
    "expert_variance",
    "gate_entropy",
    "max_softmax_uncertainty",
    "mixture_probs",
    "mutual_information",
    "predictive_entropy",
    "uncertainty_maps",
]
