"""Misclassification / OOD detection metrics from histograms against exact references."""

from __future__ import annotations

import math

import pytest
import torch

from moe_perception.metrics import (
    ScoreHistograms,
    auroc_exact,
    auroc_from_histograms,
    auroc_tie_bound,
    bin_index,
    conditional_correctness,
    fpr_at_tpr_exact,
    fpr_at_tpr_from_histograms,
    score_histograms,
    uncertainty_bin_edges,
)


def _brute_auroc(scores: list[float], positive: list[bool]) -> float:
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    total = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return total / (len(pos) * len(neg))


def _scores(seed: int, n: int = 400):
    generator = torch.Generator().manual_seed(seed)
    positive = torch.rand(n, generator=generator) < 0.3
    # Positives score higher on average; squared to crowd values near zero like entropy.
    scores = (torch.rand(n, generator=generator) * 0.7 + 0.3 * positive).clamp(0, 1) ** 2
    return scores, positive


def test_edges_are_increasing_and_cover_unit_interval() -> None:
    edges = uncertainty_bin_edges()
    assert edges[0] == 0 and edges[-1] == 1 and edges.numel() == 1592
    assert bool((edges[1:] > edges[:-1]).all())
    index = bin_index(
        torch.tensor([0.0, 5e-9, 1e-8, 0.5, 1.0, 1.5, -0.1], dtype=torch.float64), edges
    )
    assert index.tolist()[:3] == [0, 0, 1]
    assert index[3] == 1 + 600 + 490  # [0.5, 0.501): bin 601 is [0.01, 0.011)
    assert index[4] == index[5] == 1590 and index[6] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_auroc_matches_pairwise_count(seed: int) -> None:
    scores, positive = _scores(seed, 120)
    scores = (scores * 20).round() / 20  # force ties
    assert auroc_exact(scores, positive) == pytest.approx(
        _brute_auroc(scores.tolist(), positive.tolist()), abs=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_auroc_within_its_tie_bound(seed: int) -> None:
    scores, positive = _scores(seed)
    hist = score_histograms(scores, positive, uncertainty_bin_edges())
    exact = auroc_exact(scores, positive)
    bound = auroc_tie_bound(hist[0], hist[1])
    assert bound < 0.01  # fine bins: few pairs share one
    assert abs(auroc_from_histograms(hist[0], hist[1]) - exact) <= bound + 1e-12


def test_histogram_auroc_exact_for_scores_on_bin_grid() -> None:
    # Scores at bin centres of 10 equal bins: ties only between equal scores.
    edges = torch.linspace(0, 1, 11, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    scores = (torch.randint(0, 10, (300,), generator=generator) + 0.5) / 10
    positive = torch.rand(300, generator=generator) < scores
    hist = score_histograms(scores, positive, edges)
    assert auroc_from_histograms(hist[0], hist[1]) == pytest.approx(
        auroc_exact(scores, positive), abs=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fpr_at_95_tpr_within_one_bin(seed: int) -> None:
    scores, positive = _scores(seed)
    edges = uncertainty_bin_edges()
    hist = score_histograms(scores, positive, edges)
    exact = fpr_at_tpr_exact(scores, positive)
    # Brute force: the largest threshold among scores keeping >= 95 % of positives.
    pos = sorted(scores[positive].tolist(), reverse=True)
    threshold = pos[math.ceil(0.95 * len(pos) - 1e-9) - 1]
    neg = scores[~positive]
    assert exact == pytest.approx(float((neg >= threshold).double().mean()))
    approx = fpr_at_tpr_from_histograms(hist[0], hist[1])
    # Never below the exact value; above by at most the negatives in the threshold's bin.
    bin_of = int(bin_index(torch.tensor([threshold]), edges))
    assert exact - 1e-12 <= approx <= exact + float(hist[0, bin_of]) / neg.numel() + 1e-12


def test_conditional_correctness_matches_counting() -> None:
    generator = torch.Generator().manual_seed(4)
    u = torch.rand(500, generator=generator)
    correct = torch.rand(500, generator=generator) > u  # uncertain pixels err more
    edges = torch.linspace(0, 1, 21, dtype=torch.float64)
    hist = score_histograms(u, ~correct, edges)
    curves = conditional_correctness(hist[0], hist[1])
    for j, t in enumerate(edges.tolist()):
        certain = u < t
        n_ac = int((correct & certain).sum())
        n_ic = int((~correct & certain).sum())
        n_iu = int((~correct & ~certain).sum())
        if n_ac + n_ic:
            assert curves["p_accurate_certain"][j] == pytest.approx(n_ac / (n_ac + n_ic))
        else:
            assert math.isnan(curves["p_accurate_certain"][j])
        assert curves["p_uncertain_inaccurate"][j] == pytest.approx(n_iu / int((~correct).sum()))
        assert curves["pavpu"][j] == pytest.approx((n_ac + n_iu) / 500)


def test_accumulator_and_degenerate_cases() -> None:
    scores, positive = _scores(9)
    acc = ScoreHistograms()
    valid = torch.ones_like(positive)
    valid[:10] = False
    for part in range(4):
        s = slice(part * 100, (part + 1) * 100)
        acc.update(scores[s], positive[s], valid[s])
    assert int(acc.counts.sum()) == 390
    hist = score_histograms(scores[10:], positive[10:], acc.edges)
    assert torch.equal(acc.counts, hist)
    assert acc.auroc() == auroc_from_histograms(hist[0], hist[1])
    assert acc.fpr_at_tpr() == fpr_at_tpr_from_histograms(hist[0], hist[1])
    assert acc.auroc_tie_bound() >= 0
    assert set(acc.conditional_correctness()) == {
        "p_accurate_certain",
        "p_uncertain_inaccurate",
        "pavpu",
    }
    empty = torch.zeros(5)
    assert math.isnan(auroc_from_histograms(empty, torch.ones(5)))
    assert math.isnan(fpr_at_tpr_from_histograms(torch.ones(5), empty))
    assert math.isnan(auroc_exact(torch.rand(4), torch.zeros(4, dtype=torch.bool)))
    # A perfect separator.
    assert auroc_from_histograms(torch.tensor([3.0, 0, 0]), torch.tensor([0, 0, 2.0])) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        auroc_from_histograms(torch.ones(3), torch.ones(4))


def test_table_lookup_bins_equal_the_binary_search() -> None:
    edges = uncertainty_bin_edges()
    as_float = edges.float()
    up, down = torch.tensor(2.0), torch.tensor(-1.0)
    generator = torch.Generator().manual_seed(0)
    scores = torch.cat(
        [
            as_float,  # on every edge, and one float either side of it
            torch.nextafter(as_float, up),
            torch.nextafter(as_float, down),
            torch.rand(50_000, generator=generator) ** 8,  # crowded near zero
            torch.tensor([0.0, 1.0, 1e-45, 1e-38, -0.5, 1.5, math.inf, math.nan]),
        ]
    )
    fast = bin_index(scores, edges)  # float32 scores, default edges: the table
    search = (torch.bucketize(scores.double(), edges, right=True) - 1).clamp(0, 1590)
    assert torch.equal(fast, search)
    assert bin_index(scores.double(), edges).equal(search)  # float64: the search itself
