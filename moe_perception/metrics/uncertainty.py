"""How well an uncertainty score flags errors (or unfamiliar inputs), with fixed memory.

A score ``u`` in [0, 1] is reduced to histograms over fixed bin edges, one for the
"positive" pixels (misclassified, or out of distribution) and one for the negatives.
From the two histograms follow, without any per-pixel list:

- AUROC, counting pairs within one bin as ties (half). Its distance to the exact,
  sort-based AUROC is at most :func:`auroc_tie_bound` = 0.5 sum_b pos_b neg_b / (P N),
  which this module reports alongside.
- FPR at 95 % TPR, at the largest bin edge whose TPR still reaches 95 %. It is never
  below the exact value and exceeds it by at most the share of negatives in that bin.
- Conditional correctness (Mukhoti & Gal) at every bin edge t, where a pixel is
  *certain* when ``u < t``: p(accurate | certain) = n_ac / (n_ac + n_ic),
  p(uncertain | inaccurate) = n_iu / (n_ic + n_iu), PAvPU = (n_ac + n_iu) / N.
  These are exact at the edges.

The default edges (:func:`uncertainty_bin_edges`) are 1591 bins: [0, 1e-8), 600
geometric bins up to 1e-2 (confident pixels crowd near zero, and AUROC only cares about
the order) and 990 bins of width 0.001 up to 1 (the last one closed).
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import Tensor


@cache
def _default_edges() -> Tensor:
    geometric = torch.logspace(-8, -2, 601, dtype=torch.float64)
    linear = torch.linspace(0.01, 1.0, 991, dtype=torch.float64)[1:]
    return torch.cat([torch.zeros(1, dtype=torch.float64), geometric, linear])


def uncertainty_bin_edges() -> Tensor:
    """The default increasing bin edges over [0, 1], float64 (1592,): 1591 bins."""
    return _default_edges().clone()


# float32 scores in [0, 1] are looked up by the top bits of their bit pattern (monotonic
# for non-negative floats): a cell spans at most 2^-10 of its value, narrower than every
# default bin, so one comparison with the next edge finishes the search exactly.
_CELL_SHIFT = 13
_ONE_BITS = 0x3F800000  # the bits of 1.0f


@cache
def _default_lookup() -> tuple[Tensor, Tensor]:
    """Per cell, the bin of its smallest float, and the edges rounded up to float32."""
    edges = _default_edges()
    bits = torch.arange(0, (_ONE_BITS >> _CELL_SHIFT) + 1, dtype=torch.int64) << _CELL_SHIFT
    lowest = bits.to(torch.int32).view(torch.float32)
    highest = (bits + (1 << _CELL_SHIFT) - 1).clamp(max=_ONE_BITS).to(torch.int32)
    first = _bucketize(lowest, edges)
    if not bool((_bucketize(highest.view(torch.float32), edges) - first).le(1).all()):
        raise AssertionError("a lookup cell spans two bin edges")  # the edges changed
    # u >= e (float64) exactly when u >= the smallest float32 not below e.
    edges32 = edges.float()
    edges32 = torch.where(edges32.double() < edges, torch.nextafter(edges32, edges32 + 1), edges32)
    upper = torch.cat([edges32[1:], edges32.new_tensor([float("inf")])])
    return first, upper


def _bucketize(scores: Tensor, edges: Tensor) -> Tensor:
    index = torch.bucketize(scores.double(), edges, right=True) - 1
    return index.clamp(0, edges.numel() - 2)


def bin_index(scores: Tensor, edges: Tensor) -> Tensor:
    """Bin of each score: ``b`` with ``edges[b] <= u < edges[b + 1]``, the last bin closed.

    Scores below ``edges[0]`` fall in bin 0 and above ``edges[-1]`` in the last bin. For
    float32 scores and the default edges a table lookup gives the same bins as a binary
    search, about ten times faster.

    Shape:
        - scores: any shape; edges: (B + 1,).
        - Output: like ``scores``, int64 in [0, B).
    """
    default = _default_edges()
    if (
        scores.dtype != torch.float32
        or edges.shape != default.shape
        or not torch.equal(edges, default)
    ):
        return _bucketize(scores, edges)
    first, upper = _default_lookup()
    # Out-of-range scores go to the end bins and NaN to the last, as with the search.
    clamped = scores.nan_to_num(nan=1.0).clamp(0.0, 1.0).contiguous()
    cell = (clamped.view(torch.int32) >> _CELL_SHIFT).long()
    index = first.take(cell)
    index += (clamped >= upper.take(index)).long()
    return index.clamp_(max=default.numel() - 2)


def score_histograms(
    scores: Tensor, positive: Tensor, edges: Tensor, valid: Tensor | None = None
) -> Tensor:
    """Histograms of a score for negative and positive pixels.

    Args:
        scores: the uncertainty score of each pixel.
        positive: True where the pixel is a positive (e.g. misclassified).
        edges: increasing bin edges.
        valid: pixels to count (``None``: all).

    Returns:
        int64 (2, B): row 0 negatives, row 1 positives.

    Shape:
        - scores, positive, valid: any shape, the same.
        - Output: (2, B) with B = len(edges) - 1.
    """
    bins = edges.numel() - 1
    index = bin_index(scores.reshape(-1), edges) + bins * positive.reshape(-1).long()
    if valid is not None:
        index = index[valid.reshape(-1)]
    return torch.bincount(index, minlength=2 * bins).view(2, bins)


def _as_counts(negatives: Tensor, positives: Tensor) -> tuple[Tensor, Tensor]:
    negatives, positives = negatives.double().reshape(-1), positives.double().reshape(-1)
    if negatives.shape != positives.shape:
        raise ValueError(
            f"histograms differ in length: {negatives.numel()} vs {positives.numel()} bins"
        )
    return negatives, positives


def auroc_from_histograms(negatives: Tensor, positives: Tensor) -> float:
    """P(u_pos > u_neg) + 0.5 P(same bin): AUROC of the score for telling positives.

    Args:
        negatives: counts of negatives per bin.
        positives: counts of positives per bin (over the same edges).

    Returns:
        AUROC in [0, 1]; NaN when either class is empty.

    Shape:
        - negatives, positives: (B,).
    """
    neg, pos = _as_counts(negatives, positives)
    n_neg, n_pos = float(neg.sum()), float(pos.sum())
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    below = torch.cumsum(neg, 0) - neg  # negatives in lower bins
    pairs = (pos * (below + 0.5 * neg)).sum()
    return float(pairs / (n_neg * n_pos))


def auroc_tie_bound(negatives: Tensor, positives: Tensor) -> float:
    """Bound on |histogram AUROC - exact AUROC|: 0.5 sum_b pos_b neg_b / (P N).

    Shape:
        - negatives, positives: (B,).
    """
    neg, pos = _as_counts(negatives, positives)
    n_neg, n_pos = float(neg.sum()), float(pos.sum())
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    return float(0.5 * (neg * pos).sum() / (n_neg * n_pos))


def _needed(tpr: float, n_pos: float) -> int:
    # The smallest count of positives that reaches the rate (guarding float error).
    return max(1, math.ceil(tpr * n_pos - 1e-9))


def fpr_at_tpr_from_histograms(negatives: Tensor, positives: Tensor, tpr: float = 0.95) -> float:
    """False-positive rate at the largest bin edge whose true-positive rate is >= ``tpr``.

    A pixel is flagged when ``u >= edge``.

    Shape:
        - negatives, positives: (B,).
    """
    neg, pos = _as_counts(negatives, positives)
    n_neg, n_pos = float(neg.sum()), float(pos.sum())
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    # Counts with u >= edges[b], for b = 0..B-1.
    pos_above = torch.flip(torch.cumsum(torch.flip(pos, [0]), 0), [0])
    neg_above = torch.flip(torch.cumsum(torch.flip(neg, [0]), 0), [0])
    reaching = torch.nonzero(pos_above >= _needed(tpr, n_pos)).flatten()
    return float(neg_above[reaching[-1]] / n_neg)


def conditional_correctness(correct: Tensor, incorrect: Tensor) -> dict[str, Tensor]:
    """p(accurate|certain), p(uncertain|inaccurate) and PAvPU at every bin edge.

    At threshold ``t = edges[j]`` (j = 0..B), a pixel is certain when ``u < t``: the
    certain ones are those in bins below j.

    Args:
        correct: histogram of ``u`` over correctly classified pixels.
        incorrect: histogram of ``u`` over misclassified pixels.

    Returns:
        float64 tensors of length B + 1: ``p_accurate_certain`` (NaN with no certain
        pixel), ``p_uncertain_inaccurate`` (NaN with no error) and ``pavpu``.

    Shape:
        - correct, incorrect: (B,).
    """
    correct, incorrect = _as_counts(correct, incorrect)
    zero = torch.zeros(1, dtype=torch.float64)
    n_ac = torch.cat([zero, torch.cumsum(correct, 0)])
    n_ic = torch.cat([zero, torch.cumsum(incorrect, 0)])
    n_iu = incorrect.sum() - n_ic
    total = correct.sum() + incorrect.sum()
    certain = n_ac + n_ic
    return {
        "p_accurate_certain": torch.where(certain > 0, n_ac / certain.clamp(min=1), torch.nan),
        "p_uncertain_inaccurate": (
            n_iu / incorrect.sum() if incorrect.sum() > 0 else torch.full_like(n_ac, torch.nan)
        ),
        "pavpu": (n_ac + n_iu) / total if total > 0 else torch.full_like(n_ac, torch.nan),
    }


def auroc_exact(scores: Tensor, positive: Tensor) -> float:
    """Exact AUROC by sorting (Mann-Whitney U, ties count half). For references and for
    per-image scores; use the histogram form for pixels.

    Shape:
        - scores, positive: (N,).
    """
    scores = scores.reshape(-1).double()
    positive = positive.reshape(-1).bool()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    # Average ranks over ties (1-based).
    unique, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2
    ranks[order] = average[inverse]
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def fpr_at_tpr_exact(scores: Tensor, positive: Tensor, tpr: float = 0.95) -> float:
    """Exact FPR at the largest threshold whose TPR is >= ``tpr`` (flag ``u >= t``).

    Shape:
        - scores, positive: (N,).
    """
    scores = scores.reshape(-1).double()
    positive = positive.reshape(-1).bool()
    pos_scores = torch.sort(scores[positive], descending=True).values
    neg_scores = scores[~positive]
    if pos_scores.numel() == 0 or neg_scores.numel() == 0:
        return float("nan")
    threshold = pos_scores[_needed(tpr, pos_scores.numel()) - 1]
    return float((neg_scores >= threshold).double().mean())


class ScoreHistograms:
    """Accumulates :func:`score_histograms` of one score over batches.

    Args:
        edges: bin edges (default :func:`uncertainty_bin_edges`).
    """

    def __init__(self, edges: Tensor | None = None) -> None:
        self.edges = uncertainty_bin_edges() if edges is None else edges.double()
        self.counts = torch.zeros(2, self.edges.numel() - 1, dtype=torch.int64)

    def update(self, scores: Tensor, positive: Tensor, valid: Tensor | None = None) -> None:
        """Add pixels: scores, positive flags and an optional valid mask, all one shape."""
        self.counts += score_histograms(
            scores.detach().cpu(),
            positive.detach().cpu(),
            self.edges,
            None if valid is None else valid.detach().cpu(),
        )

    def auroc(self) -> float:
        return auroc_from_histograms(self.counts[0], self.counts[1])

    def auroc_tie_bound(self) -> float:
        return auroc_tie_bound(self.counts[0], self.counts[1])

    def fpr_at_tpr(self, tpr: float = 0.95) -> float:
        return fpr_at_tpr_from_histograms(self.counts[0], self.counts[1], tpr)

    def conditional_correctness(self) -> dict[str, Tensor]:
        """Treating positives as *misclassified* pixels; see :func:`conditional_correctness`."""
        return conditional_correctness(self.counts[0], self.counts[1])
