"""Evaluation metrics: pure functions and fixed-memory accumulators."""

from moe_perception.metrics.bootstrap import bootstrap_interval, bootstrap_weights
from moe_perception.metrics.calibration import (
    CALIBRATION_BINS,
    CalibrationMetrics,
    brier_sum,
    calibration_histogram,
    ece_from_histogram,
    expected_calibration_error,
    maximum_calibration_error,
    mce_from_histogram,
    nll_sum,
    probs_calibration_histogram,
    reliability_from_histogram,
)
from moe_perception.metrics.segmentation import (
    ConfusionMatrix,
    confusion_matrix,
    iou_from_confusion,
    miou_from_confusion,
)
from moe_perception.metrics.uncertainty import (
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

__all__ = [
    "CALIBRATION_BINS",
    "CalibrationMetrics",
    "ConfusionMatrix",
    "ScoreHistograms",
    "auroc_exact",
    "auroc_from_histograms",
    "auroc_tie_bound",
    "bin_index",
    "bootstrap_interval",
    "bootstrap_weights",
    "brier_sum",
    "calibration_histogram",
    "conditional_correctness",
    "confusion_matrix",
    "ece_from_histogram",
    "expected_calibration_error",
    "fpr_at_tpr_exact",
    "fpr_at_tpr_from_histograms",
    "iou_from_confusion",
    "maximum_calibration_error",
    "mce_from_histogram",
    "miou_from_confusion",
    "nll_sum",
    "probs_calibration_histogram",
    "reliability_from_histogram",
    "score_histograms",
    "uncertainty_bin_edges",
]
