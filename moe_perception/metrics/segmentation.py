"""Segmentation accuracy: confusion matrices and IoU, with fixed-size state."""

from __future__ import annotations

import torch
from torch import Tensor

from moe_perception.data.common import IGNORE_INDEX


def confusion_matrix(
    preds: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Count (target, prediction) pairs.

    Args:
        preds: predicted class ids.
        target: true class ids; ``ignore_index`` pixels are skipped.
        num_classes: C.
        ignore_index: label value to skip.

    Returns:
        (C, C) int64 matrix, rows = target, columns = prediction.

    Shape:
        - preds, target: any shape, the same.
    """
    valid = target != ignore_index
    index = target[valid].long() * num_classes + preds[valid].long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(
        num_classes, num_classes
    )


def iou_from_confusion(matrix: Tensor) -> Tensor:
    """Per-class IoU from a confusion matrix; NaN for a class absent from both."""
    matrix = matrix.double()
    true_positive = matrix.diagonal()
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    return torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan)


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix over batches.

    Args:
        num_classes: C.
        ignore_index: label value to skip.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.matrix += confusion_matrix(
            preds.cpu(), target.cpu(), self.num_classes, self.ignore_index
        )

    def iou(self) -> Tensor:
        return iou_from_confusion(self.matrix)

    def miou(self) -> float:
        return float(self.iou().nanmean())

    def pixel_accuracy(self) -> float:
        return float(self.matrix.diagonal().sum() / self.matrix.sum().clamp(min=1))


def miou_from_confusion(matrix: Tensor) -> float:
    """Mean IoU over the classes present in target or prediction; NaN if none.

    Shape:
        - matrix: (C, C), rows = target, columns = prediction.
    """
    iou = iou_from_confusion(matrix)
    return float(iou.nanmean()) if bool((~iou.isnan()).any()) else float("nan")
