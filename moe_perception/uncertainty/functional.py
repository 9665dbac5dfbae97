"""Uncertainty maps of a mixture of experts, as pure tensor functions.

Notation: natural logarithms; ``p_k`` the softmax of expert k, (B, K, C, H, W); gate
weights ``w`` of shape (B, K, H, W) or broadcastable (B, K, 1, 1), non-negative and
summing to 1 over K; the mixture ``p = sum_k w_k p_k``; ``c* = argmax_c p``. Every map
is normalised to [0, 1] and has shape (B, H, W).

Differences from the paper's code (KASTEL-MobilityLab/mixtures-of-experts): there, the
expected expert entropy in the mutual information was an *unweighted* mean over experts,
and the expert variance was normalised by the maximum over the batch, which makes one
pixel's value depend on the other images in the batch. Here the expected entropy is
gate-weighted (the mixture's own expectation) and the variance is divided by its bound
0.25, so a pixel's value depends on that pixel alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _expand_weights(weights: Tensor) -> Tensor:
    """(B, K, ...) -> (B, K, 1, ...) to broadcast against (B, K, C, ...)."""
    return weights.unsqueeze(2)


def _entropy(probs: Tensor, dim: int) -> Tensor:
    # xlogy gives 0 * ln 0 = 0 exactly, so one-hot inputs have zero entropy.
    return -torch.special.xlogy(probs, probs).sum(dim=dim)


def mixture_probs(expert_probs: Tensor, weights: Tensor) -> Tensor:
    """Gate-weighted mixture of the experts' class probabilities.

    Args:
        expert_probs: p_k.
        weights: gate weights w.

    Returns:
        p = sum_k w_k p_k.

    Shape:
        - expert_probs: (B, K, C, H, W).
        - weights: (B, K, H, W) or (B, K, 1, 1).
        - Output: (B, C, H, W).
    """
    return (_expand_weights(weights) * expert_probs).sum(dim=1)


def predictive_entropy(probs: Tensor) -> Tensor:
    """Entropy of the predictive distribution, normalised by ln C.

    Args:
        probs: class probabilities (e.g. the mixture).

    Returns:
        -sum_c p_c ln p_c / ln C, in [0, 1].

    Shape:
        - probs: (B, C, H, W).
        - Output: (B, H, W).
    """
    return (_entropy(probs, dim=1) / math.log(probs.shape[1])).clamp(0.0, 1.0)


def mutual_information(expert_probs: Tensor, weights: Tensor) -> Tensor:
    """Mutual information between the prediction and the choice of expert (disagreement).

    Args:
        expert_probs: p_k.
        weights: gate weights w.

    Returns:
        [H(p) - sum_k w_k H(p_k)] / ln C, in [0, 1].

    Shape:
        - expert_probs: (B, K, C, H, W).
        - weights: (B, K, H, W) or (B, K, 1, 1).
        - Output: (B, H, W).
    """
    mixture = mixture_probs(expert_probs, weights)
    expected = (weights * _entropy(expert_probs, dim=2)).sum(dim=1)
    information = _entropy(mixture, dim=1) - expected
    return (information / math.log(expert_probs.shape[2])).clamp(0.0, 1.0)


def expert_variance(expert_probs: Tensor, weights: Tensor) -> Tensor:
    """Gate-weighted variance of the experts' probability for the predicted class.

    Args:
        expert_probs: p_k.
        weights: gate weights w.

    Returns:
        sum_k w_k (p_k[c*] - p[c*])^2 / 0.25, in [0, 1] (0.25 bounds a variance of values
        in [0, 1]).

    Shape:
        - expert_probs: (B, K, C, H, W).
        - weights: (B, K, H, W) or (B, K, 1, 1).
        - Output: (B, H, W).
    """
    mixture = mixture_probs(expert_probs, weights)
    predicted = mixture.argmax(dim=1, keepdim=True)  # (B, 1, H, W)
    index = predicted.unsqueeze(1).expand(-1, expert_probs.shape[1], -1, -1, -1)
    expert_top = expert_probs.gather(2, index).squeeze(2)  # (B, K, H, W)
    mixture_top = mixture.gather(1, predicted)  # (B, 1, H, W)
    variance = (weights * (expert_top - mixture_top) ** 2).sum(dim=1)
    return (variance / 0.25).clamp(0.0, 1.0)


def gate_entropy(weights: Tensor) -> Tensor:
    """Entropy of the gate weights (routing uncertainty), normalised by ln K.

    Args:
        weights: gate weights w over K experts. For a classwise gate pass each pixel's
            weights for its predicted class.

    Returns:
        -sum_k w_k ln w_k / ln K, in [0, 1]; zeros when K = 1.

    Shape:
        - weights: (B, K, ...).
        - Output: (B, ...).
    """
    k = weights.shape[1]
    if k == 1:
        return torch.zeros_like(weights[:, 0])
    return (_entropy(weights, dim=1) / math.log(k)).clamp(0.0, 1.0)


def max_softmax_uncertainty(probs: Tensor) -> Tensor:
    """One minus the largest class probability.

    Shape:
        - probs: (B, C, H, W).
        - Output: (B, H, W).
    """
    # A mixture can sum to 1 + rounding, so its largest probability can exceed 1 by ~1e-7.
    return (1.0 - probs.amax(dim=1)).clamp(0.0, 1.0)
