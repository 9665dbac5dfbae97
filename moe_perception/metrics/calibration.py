"""Calibration of a predictive distribution: ECE, MCE, Brier score and NLL, fixed memory.

Everything reduces a batch to a few sums: a (3, M) histogram over M equal confidence
bins (pixel count, summed confidence, summed correctness), and scalar sums of the Brier
score and the negative log-likelihood. Batches and images are combined by adding these
sums, so the state never grows with the number of pixels.

Bins: ``[m/M, (m+1)/M)`` for ``m < M - 1`` and ``[(M-1)/M, 1]`` for the last one.
torchmetrics uses the same half-open bins but puts a confidence of exactly 1.0 in a
bin of its own (an (M+1)-th); merging it into the last bin, as here, can only lower the
ECE and changes nothing for confidences below 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moe_perception.data.common import IGNORE_INDEX

CALIBRATION_BINS = 15


def _check_shapes(probs: Tensor, target: Tensor) -> None:
    if probs.dim() < 2 or probs.shape[0] != target.shape[0] or probs.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"probabilities {tuple(probs.shape)} and target {tuple(target.shape)} do not match: "
            "expected (B, C, ...) and (B, ...)"
        )


def _true_class(values: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(B, C, ...) values and (B, ...) targets -> each pixel's true-class value and the
    valid mask, both (B, ...), without copying the class dimension."""
    _check_shapes(values, target)
    valid = target != ignore_index
    index = target.long().clamp(0, values.shape[1] - 1).unsqueeze(1)
    return values.gather(1, index).squeeze(1), valid


def calibration_histogram(confidence: Tensor, correct: Tensor, num_bins: int = 15) -> Tensor:
    """Histogram of top-label confidence with the accuracy in each bin.

    Args:
        confidence: confidence of each prediction, in [0, 1].
        correct: whether each prediction is right (bool or 0/1).
        num_bins: M equal-width bins over [0, 1].

    Returns:
        float64 (3, M): row 0 the count, row 1 the summed confidence and row 2 the
        number correct in each bin.

    Shape:
        - confidence, correct: any shape, the same.
        - Output: (3, M).
    """
    confidence = confidence.reshape(-1).double()
    correct = correct.reshape(-1).double()
    # floor(u * M) is exact for float32 or float64 u in [0, 1] and M < 2^24 bins.
    index = (confidence * num_bins).floor_().long().clamp_(0, num_bins - 1)
    return torch.stack(
        [
            torch.bincount(index, minlength=num_bins).double(),
            torch.bincount(index, weights=confidence, minlength=num_bins),
            torch.bincount(index, weights=correct, minlength=num_bins),
        ]
    )


def probs_calibration_histogram(
    probs: Tensor, target: Tensor, num_bins: int = 15, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """:func:`calibration_histogram` of the top label of class probabilities.

    Args:
        probs: class probabilities.
        target: true class ids; ``ignore_index`` pixels are skipped.
        num_bins: M.
        ignore_index: label value to skip.

    Returns:
        float64 (3, M), see :func:`calibration_histogram`.

    Shape:
        - probs: (B, C, ...); target: (B, ...).
        - Output: (3, M).
    """
    _check_shapes(probs, target)
    valid = target != ignore_index
    # max(dim).indices follows argmax's first-maximum rule and is faster on the CPU.
    confidence, predicted = probs.max(dim=1)
    return calibration_histogram(confidence[valid], (predicted == target)[valid], num_bins)


def ece_from_histogram(hist: Tensor) -> float:
    """Expected calibration error: sum_m (n_m / N) |acc_m - conf_m|; NaN if N = 0.

    Shape:
        - hist: (3, M) from :func:`calibration_histogram`.
    """
    total = float(hist[0].sum())
    if total == 0:
        return float("nan")
    return float((hist[1] - hist[2]).abs().sum() / total)


def mce_from_histogram(hist: Tensor) -> float:
    """Maximum calibration error: max over non-empty bins of |acc_m - conf_m|.

    Shape:
        - hist: (3, M) from :func:`calibration_histogram`.
    """
    filled = hist[0] > 0
    if not bool(filled.any()):
        return float("nan")
    gap = (hist[1][filled] - hist[2][filled]).abs() / hist[0][filled]
    return float(gap.max())


def reliability_from_histogram(hist: Tensor) -> dict[str, list[float]]:
    """Per-bin accuracy, mean confidence and share of pixels (NaN for empty bins).

    Shape:
        - hist: (3, M).
    """
    count = hist[0]
    safe = count.clamp(min=1)
    empty = count == 0
    accuracy = torch.where(empty, torch.nan, hist[2] / safe)
    confidence = torch.where(empty, torch.nan, hist[1] / safe)
    share = count / count.sum().clamp(min=1)
    return {
        "accuracy": accuracy.tolist(),
        "confidence": confidence.tolist(),
        "share": share.tolist(),
    }


def expected_calibration_error(
    probs: Tensor, target: Tensor, num_bins: int = 15, ignore_index: int = IGNORE_INDEX
) -> float:
    """Top-label ECE over M equal bins.

    Args:
        probs: class probabilities.
        target: true class ids; ``ignore_index`` pixels are skipped.
        num_bins: M.
        ignore_index: label value to skip.

    Shape:
        - probs: (B, C, ...); target: (B, ...).
    """
    return ece_from_histogram(probs_calibration_histogram(probs, target, num_bins, ignore_index))


def maximum_calibration_error(
    probs: Tensor, target: Tensor, num_bins: int = 15, ignore_index: int = IGNORE_INDEX
) -> float:
    """Top-label MCE over M equal bins (see :func:`expected_calibration_error`).

    Shape:
        - probs: (B, C, ...); target: (B, ...).
    """
    return mce_from_histogram(probs_calibration_histogram(probs, target, num_bins, ignore_index))


def brier_sum(
    probs: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[float, int]:
    """Summed multi-class Brier score sum_c (p_c - [c = y])^2 over valid pixels, and N.

    Args:
        probs: class probabilities.
        target: true class ids; ``ignore_index`` pixels are skipped.
        ignore_index: label value to skip.

    Returns:
        (sum over valid pixels, number of valid pixels); the Brier score is their ratio,
        in [0, 2].

    Shape:
        - probs: (B, C, ...); target: (B, ...).
    """
    true_prob, valid = _true_class(probs, target, ignore_index)
    squares = torch.linalg.vecdot(probs, probs, dim=1)
    # sum_c p_c^2 - 2 p_y + 1, summed in float64
    value = squares[valid].double() - 2.0 * true_prob[valid].double() + 1.0
    return float(value.sum()), int(valid.sum())


def nll_sum(
    log_probs: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[float, int]:
    """Summed negative log-likelihood -ln p_y over valid pixels, and N.

    Args:
        log_probs: natural log of the class probabilities (pass logs, not
            probabilities, so that tiny p_y do not underflow).
        target: true class ids; ``ignore_index`` pixels are skipped.
        ignore_index: label value to skip.

    Shape:
        - log_probs: (B, C, ...); target: (B, ...).
    """
    true_log_prob, valid = _true_class(log_probs, target, ignore_index)
    return float(-true_log_prob[valid].double().sum()), int(valid.sum())


class CalibrationMetrics:
    """Accumulates ECE/MCE histograms, Brier and NLL sums over batches.

    Args:
        num_bins: M equal confidence bins.
        ignore_index: label value to skip.
    """

    def __init__(self, num_bins: int = CALIBRATION_BINS, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_bins = num_bins
        self.ignore_index = ignore_index
        self.hist = torch.zeros(3, num_bins, dtype=torch.float64)
        self.brier = 0.0
        self.nll = 0.0
        self.count = 0

    def update(self, probs: Tensor, target: Tensor, log_probs: Tensor | None = None) -> None:
        """Add a batch: probs (B, C, ...), target (B, ...), optional log_probs like probs."""
        probs, target = probs.detach().cpu(), target.detach().cpu()
        self.hist += probs_calibration_histogram(probs, target, self.num_bins, self.ignore_index)
        brier, count = brier_sum(probs, target, self.ignore_index)
        if log_probs is None:
            log_probs = probs.double().clamp(min=torch.finfo(torch.float64).tiny).log()
        nll, _ = nll_sum(log_probs.detach().cpu(), target, self.ignore_index)
        self.brier += brier
        self.nll += nll
        self.count += count

    def compute(self) -> dict[str, float]:
        """``ece``, ``mce``, ``brier``, ``nll`` (means over valid pixels) and ``pixels``."""
        count = max(self.count, 1)
        return {
            "ece": ece_from_histogram(self.hist),
            "mce": mce_from_histogram(self.hist),
            "brier": self.brier / count if self.count else float("nan"),
            "nll": self.nll / count if self.count else float("nan"),
            "pixels": float(self.count),
        }
