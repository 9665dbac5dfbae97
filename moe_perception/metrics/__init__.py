"""Evaluation metrics: pure functions and fixed-memory accumulators."""

from moe_perception.metrics.segmentation import (
    ConfusionMatrix,
    confusion_matrix,
    iou_from_confusion,
)

__all__ = ["ConfusionMatrix", "confusion_matrix", "iou_from_confusion"]
