"""Calibration metrics against brute-force references and torchmetrics."""

from __future__ import annotations

import math

import pytest
import torch

from moe_perception.metrics import (
    CalibrationMetrics,
    brier_sum,
    calibration_histogram,
    expected_calibration_error,
    maximum_calibration_error,
    nll_sum,
    reliability_from_histogram,
)


def _random_batch(seed: int, b: int = 2, c: int = 5, h: int = 6, w: int = 7):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=generator) * 3
    target = torch.randint(0, c, (b, h, w), generator=generator)
    target[0, 0, :3] = 255  # a few ignored pixels
    return logits.softmax(1), logits.log_softmax(1), target


def _reference_bins(probs, target, bins=15):
    """Plain Python loops over pixels: (count, summed confidence, summed correct) per bin."""
    c = probs.shape[1]
    flat = probs.movedim(1, -1).reshape(-1, c).tolist()
    labels = target.reshape(-1).tolist()
    table = [[0, 0.0, 0] for _ in range(bins)]
    for p, y in zip(flat, labels):
        if y == 255:
            continue
        conf = max(p)
        pred = p.index(conf)
        index = min(int(conf * bins), bins - 1)
        table[index][0] += 1
        table[index][1] += conf
        table[index][2] += int(pred == y)
    return table


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_mce_match_brute_force(seed: int) -> None:
    probs, _, target = _random_batch(seed)
    table = _reference_bins(probs, target)
    n = sum(row[0] for row in table)
    ece = sum(abs(row[1] - row[2]) for row in table) / n
    mce = max(abs(row[1] - row[2]) / row[0] for row in table if row[0])
    assert expected_calibration_error(probs, target) == pytest.approx(ece, abs=1e-12)
    assert maximum_calibration_error(probs, target) == pytest.approx(mce, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ece_mce_agree_with_torchmetrics(seed: int) -> None:
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs, _, target = _random_batch(seed, b=3, c=11, h=16, w=24)
    for norm, ours in (("l1", expected_calibration_error), ("max", maximum_calibration_error)):
        reference = multiclass_calibration_error(
            probs, target, num_classes=11, n_bins=15, norm=norm, ignore_index=255
        )
        assert ours(probs, target) == pytest.approx(float(reference), abs=1e-4)


def test_histogram_bins_edges_and_one() -> None:
    confidence = torch.tensor([0.0, 1 / 15 - 1e-9, 1 / 15 + 1e-9, 0.999, 1.0])
    correct = torch.tensor([1, 0, 1, 1, 0])
    hist = calibration_histogram(confidence, correct, 15)
    assert hist[0].tolist() == [2, 1] + [0] * 12 + [2]
    assert hist[2, 14] == 1  # 0.999 right, 1.0 wrong: the last bin is closed at 1
    reliability = reliability_from_histogram(hist)
    assert reliability["accuracy"][14] == 0.5
    assert math.isnan(reliability["accuracy"][5])
    assert sum(reliability["share"]) == pytest.approx(1.0)


def test_perfect_calibration_has_zero_ece() -> None:
    # Ten pixels with confidence 0.8 of which eight are right: acc = conf in the bin.
    probs = torch.zeros(1, 2, 1, 10, dtype=torch.float64)
    probs[0, 0] = 0.8
    probs[0, 1] = 0.2
    target = torch.tensor([[[0] * 8 + [1] * 2]])
    assert expected_calibration_error(probs, target) == pytest.approx(0.0, abs=1e-12)
    assert maximum_calibration_error(probs, target) == pytest.approx(0.0, abs=1e-12)


def test_brier_and_nll_match_brute_force() -> None:
    probs, log_probs, target = _random_batch(5)
    c = probs.shape[1]
    brier, nll, n = 0.0, 0.0, 0
    for p, lp, y in zip(
        probs.movedim(1, -1).reshape(-1, c).tolist(),
        log_probs.movedim(1, -1).reshape(-1, c).tolist(),
        target.reshape(-1).tolist(),
    ):
        if y == 255:
            continue
        brier += sum((pc - (1.0 if i == y else 0.0)) ** 2 for i, pc in enumerate(p))
        nll -= lp[y]
        n += 1
    got_brier, count = brier_sum(probs, target)
    got_nll, count2 = nll_sum(log_probs, target)
    assert count == count2 == n
    assert got_brier == pytest.approx(brier, rel=1e-6)
    assert got_nll == pytest.approx(nll, rel=1e-6)


def test_accumulator_equals_one_shot() -> None:
    probs, log_probs, target = _random_batch(7, b=4)
    metrics = CalibrationMetrics()
    for i in range(4):
        metrics.update(probs[i : i + 1], target[i : i + 1], log_probs[i : i + 1])
    result = metrics.compute()
    assert result["ece"] == pytest.approx(expected_calibration_error(probs, target), abs=1e-12)
    assert result["mce"] == pytest.approx(maximum_calibration_error(probs, target), abs=1e-12)
    brier, n = brier_sum(probs, target)
    assert result["brier"] == pytest.approx(brier / n)
    assert result["pixels"] == n
    # Without log-probabilities the NLL comes from the probabilities themselves.
    plain = CalibrationMetrics()
    plain.update(probs, target)
    assert plain.compute()["nll"] == pytest.approx(result["nll"], rel=1e-5)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="do not match"):
        expected_calibration_error(torch.rand(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))
