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


def _valid_flat(probs: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(B, C, ...) probabilities and (B, ...) targets -> (N, C) and (N,) of valid pixels."""
    if probs.dim() < 2 or probs.shape[0] != target.shape[0] or probs.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"probabilities {tuple(probs.shape)} and target {tuple(target.shape)} do not match: "
            "expected (B, C, ...) and (B, ...)"
        )
    c = probs.shape[1]
    flat = probs.movedim(1, -1).reshape(-1, c)
    labels = target.reshape(-1)
    valid = labels != ignore_index
    return flat[valid], labels[valid].long()


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
    boundaries = torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64)
    index = (torch.bucketize(confidence, boundaries, right=True) - 1).clamp(0, num_bins - 1)
    hist = torch.zeros(3, num_bins, dtype=torch.float64)
    hist[0].index_add_(0, index, torch.ones_like(confidence))
    hist[1].index_add_(0, index, confidence)
    hist[2].index_add_(0, index, correct)
    return hist


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
    flat, labels = _valid_flat(probs, target, ignore_index)
    confidence, predicted = flat.max(dim=1)
    return calibration_histogram(confidence, predicted == labels, num_bins)


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
    flat, labels = _valid_flat(probs, target, ignore_index)
    flat = flat.double()
    # sum_c p_c^2 - 2 p_y + 1
    value = (flat**2).sum(dim=1) - 2.0 * flat.gather(1, labels[:, None])[:, 0] + 1.0
    return float(value.sum()), int(labels.numel())


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
    flat, labels = _valid_flat(log_probs, target, ignore_index)
    return float(-flat.double().gather(1, labels[:, None]).sum()), int(labels.numel())


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
