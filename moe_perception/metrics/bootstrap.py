"""Bootstrap over images with fixed memory: resample per-image sums, never pixels.

Each metric here is a function of sums over images (confusion matrices, histograms).
A bootstrap replicate draws N images with replacement; as a weight matrix ``W`` (R, N)
of draw counts, the replicate's summed state is ``W @ per_image_state``, so R replicates
cost one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def bootstrap_weights(num_images: int, resamples: int, seed: int = 0) -> Tensor:
    """Draw counts of ``resamples`` bootstrap replicates of ``num_images`` images.

    Returns:
        float64 (R, N), each row a multinomial draw of N images summing to N.
    """
    if num_images < 1:
        raise ValueError("bootstrap needs at least one image")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, num_images, (resamples, num_images), generator=generator)
    weights = torch.zeros(resamples, num_images, dtype=torch.float64)
    weights.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    return weights


def bootstrap_interval(
    per_image: Tensor,
    statistic: Callable[[Tensor], float],
    weights: Tensor,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over bootstrap replicates.

    Args:
        per_image: per-image state, (N, ...); the statistic of a set of images is
            ``statistic(sum of their states)``.
        statistic: maps a summed state (...) to a number.
        weights: draw counts from :func:`bootstrap_weights`, (R, N).
        level: coverage of the interval.

    Returns:
        (low, high); NaN replicates (e.g. no errors drawn) are dropped.

    Shape:
        - per_image: (N, ...); weights: (R, N).
    """
    flat = per_image.reshape(per_image.shape[0], -1).double()
    summed = (weights @ flat).view(weights.shape[0], *per_image.shape[1:])
    values = torch.tensor([statistic(state) for state in summed], dtype=torch.float64)
    values = values[~values.isnan()]
    if values.numel() == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2
    low, high = torch.quantile(values, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return float(low), float(high)
