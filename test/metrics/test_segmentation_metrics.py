"""Confusion matrix and IoU against brute force; bootstrap over per-image sums."""

from __future__ import annotations

import math

import pytest
import torch

from moe_perception.metrics import (
    ConfusionMatrix,
    bootstrap_interval,
    bootstrap_weights,
    confusion_matrix,
    iou_from_confusion,
    miou_from_confusion,
)


def test_confusion_and_iou_match_brute_force() -> None:
    generator = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 4, (2, 5, 6), generator=generator)
    target = torch.randint(0, 4, (2, 5, 6), generator=generator)
    target[0, 0] = 255
    matrix = confusion_matrix(preds, target, 5)
    for t in range(5):
        for p in range(5):
            assert matrix[t, p] == int(((target == t) & (preds == p)).sum())
    iou = iou_from_confusion(matrix)
    for c in range(4):
        valid = target != 255
        inter = int(((preds == c) & (target == c) & valid).sum())
        union = int((((preds == c) | (target == c)) & valid).sum())
        assert iou[c] == pytest.approx(inter / union)
    assert math.isnan(iou[4])  # absent from both
    assert miou_from_confusion(matrix) == pytest.approx(float(iou[:4].mean()))
    acc = ConfusionMatrix(5)
    acc.update(preds[:1], target[:1])
    acc.update(preds[1:], target[1:])
    assert torch.equal(acc.matrix, matrix)
    assert math.isnan(miou_from_confusion(torch.zeros(3, 3)))


def test_bootstrap_weights_and_interval() -> None:
    weights = bootstrap_weights(7, 50, seed=1)
    assert weights.shape == (50, 7) and bool((weights.sum(1) == 7).all())
    assert torch.equal(weights, bootstrap_weights(7, 50, seed=1))
    # Per-image (correct, total): the interval of the pooled accuracy.
    per_image = torch.tensor([[9.0, 10], [5, 10], [10, 10], [1, 10], [7, 10], [8, 10], [6, 10]])
    low, high = bootstrap_interval(per_image, lambda s: float(s[0] / s[1]), weights)
    assert low <= 46 / 70 <= high
    # A replicate equals the statistic of the resampled images, done by hand.
    row = weights[0]
    by_hand = sum(row[i] * per_image[i] for i in range(7))
    assert torch.allclose((row @ per_image.double()), by_hand.double())
    same = torch.ones(5, 2)
    assert bootstrap_interval(same, lambda s: float(s[0] / s[1]), bootstrap_weights(5, 20)) == (
        1.0,
        1.0,
    )
