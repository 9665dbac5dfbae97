"""Evaluation of a checkpoint and of baselines built from its experts, in fixed memory.

One forward pass of the checkpoint's model serves several *views*: the MoE itself, the
uniform ensemble of the same experts, and each expert alone (all read off the experts'
logits, no retraining); MC dropout over one expert is a second model. For each view and
each *condition* (a subset of frames, optionally corrupted) the state is per-image sums
(a confusion matrix, a 15-bin calibration histogram, Brier and NLL sums, and per map a
histogram of the uncertainty over correct and over misclassified pixels), so memory
grows with the number of images, never with pixels. From these follow every metric,
bootstrap intervals over images, the PAvPU threshold chosen on validation, and the
out-of-distribution AUROC against the in-distribution test condition.

Conventions: the network sees each frame scaled to the checkpoint's input size (as the
``Segmenter`` does); the fused logits are upsampled to the label's full resolution and
the maps and probabilities from the decoder's resolution to the same (as
:func:`moe_perception.uncertainty.uncertainty_maps` does), where all metrics are taken,
void pixels ignored. Labels (mIoU, accuracy, misclassification,
conditional correctness) are ``argmax`` of the fused logits, what a user receives;
calibration (ECE, MCE, Brier, NLL) is that of the predictive distribution
``p = sum_k w_k softmax(z_k / T)`` and its own top label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_perception.checkpoint import CheckpointMetadata
from moe_perception.data.common import IGNORE_INDEX
from moe_perception.metrics import (
    CALIBRATION_BINS,
    auroc_exact,
    auroc_from_histograms,
    auroc_tie_bound,
    bootstrap_interval,
    bootstrap_weights,
    brier_sum,
    conditional_correctness,
    confusion_matrix,
    ece_from_histogram,
    fpr_at_tpr_from_histograms,
    iou_from_confusion,
    mce_from_histogram,
    miou_from_confusion,
    probs_calibration_histogram,
    reliability_from_histogram,
    score_histograms,
    uncertainty_bin_edges,
)
from moe_perception.model import ModelOutput, upsample
from moe_perception.training.calibration import (
    LogitReservoir,
    fit_temperature,
    mixture_probs,
    mixture_true_class_log_probs,
)
from moe_perception.training.config import DataConfig, EvalConfig, Subset
from moe_perception.uncertainty import MAP_NAMES, uncertainty_maps

EVAL_MAPS: tuple[str, ...] = (*MAP_NAMES, "max_softmax")
ViewFn = Callable[[ModelOutput], ModelOutput]


# -- conditions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A set of frames to evaluate: a subset, optionally corrupted.

    Attributes:
        name: label in reports.
        subset: the frames.
        role: ``validation``, ``test`` (in distribution) or ``ood``.
        corruption: a corruption name, or ``None``.
        severity: 1..5 with a corruption.
    """

    name: str
    subset: Subset
    role: str = "test"
    corruption: str | None = None
    severity: int = 0


_CONDITION = re.compile(
    r"^(?:(?P<name>[\w.-]+)=)?(?P<splits>[\w,]+)(?::(?P<seqs>[\w,.-]+))?"
    r"(?:@(?P<a>[\d.]+)-(?P<b>[\d.]+))?(?:\+(?P<corruption>\w+):(?P<severity>\d))?$"
)


def parse_condition(text: str, role: str = "test") -> Condition:
    """Parse ``[NAME=]SPLITS[:SEQUENCES][@A-B][+CORRUPTION:SEVERITY]``.

    Examples: ``test``, ``dusk=test:0001TP``, ``train:0006R0@0.8-1``,
    ``test:Seq05VD+fog:3``.

    Raises:
        ValueError: the text does not follow the grammar.
    """
    match = _CONDITION.match(text.strip())
    if match is None:
        raise ValueError(
            f"cannot read subset {text!r}: expected [NAME=]SPLITS[:SEQUENCES][@A-B]"
            "[+CORRUPTION:SEVERITY], e.g. test:0001TP or test+fog:3"
        )
    fraction = None
    if match["a"] is not None:
        fraction = (float(match["a"]), float(match["b"]))
    subset = Subset(
        splits=tuple(match["splits"].split(",")),
        sequences=None if match["seqs"] is None else tuple(match["seqs"].split(",")),
        fraction=fraction,
    )
    corruption = match["corruption"]
    severity = int(match["severity"]) if corruption else 0
    if corruption:
        from moe_perception.data.corruptions import CORRUPTIONS

        if corruption not in CORRUPTIONS or not 1 <= severity <= 5:
            raise ValueError(
                f"bad corruption in {text!r}: choose from {CORRUPTIONS}, severity 1..5"
            )
    name = match["name"] or text.strip()
    return Condition(name, subset, role, corruption, severity)


def study_conditions(settings: EvalConfig) -> list[Condition]:
    """Validation (if any), the test subset, the OOD subsets and each corrupted test."""
    conditions = []
    if settings.validation is not None:
        conditions.append(Condition("validation", settings.validation, "validation"))
    conditions.append(Condition("test", settings.test, "test"))
    for name, subset in settings.ood:
        conditions.append(Condition(name, subset, "ood"))
    for corruption in settings.corruptions:
        for severity in settings.severities:
            conditions.append(
                Condition(f"{corruption}-{severity}", settings.test, "ood", corruption, severity)
            )
    return conditions


_TINY = torch.finfo(torch.float32).tiny


# -- views -------------------------------------------------------------------------------


def _size(output: ModelOutput) -> tuple[int, int]:
    return output.logits.shape[-2], output.logits.shape[-1]


def ensemble_view(output: ModelOutput) -> ModelOutput:
    """Uniform ensemble of the same experts (mean logits, weights 1/K)."""
    batch, k = output.expert_logits.shape[:2]
    weights = output.expert_logits.new_full((batch, k, 1, 1), 1.0 / k)
    fused = upsample(output.expert_logits.mean(dim=1), _size(output))
    return ModelOutput(fused, output.expert_logits, weights)


def expert_view(index: int) -> ViewFn:
    """One expert alone (K = 1, weight 1)."""

    def view(output: ModelOutput) -> ModelOutput:
        logits = output.expert_logits[:, index]
        ones = logits.new_ones(logits.shape[0], 1, 1, 1)
        return ModelOutput(upsample(logits, _size(output)), logits[:, None], ones)

    return view


def _identity(output: ModelOutput) -> ModelOutput:
    return output


@dataclass
class Family:
    """One model run per batch, and the views read off its output."""

    model: nn.Module
    views: dict[str, ViewFn]


def expert_names(metadata: CheckpointMetadata) -> tuple[str, ...]:
    names = metadata.expert_names
    return names or tuple(f"expert_{i}" for i in range(metadata.arch.num_experts))


def build_families(
    model: nn.Module, metadata: CheckpointMetadata, requested: Sequence[str], mc_samples: int
) -> list[Family]:
    """Resolve requested view names against the checkpoint.

    ``moe``/``ensemble``/``single``/``mc_dropout`` name the checkpoint's own kind;
    ``ensemble`` also works on an MoE (its experts, uniform); ``experts`` expands to
    ``expert:NAME`` for each expert; ``mc_dropout`` on a model of several experts means
    ``mc_dropout:<first expert>``.

    Raises:
        ValueError: a view the checkpoint cannot provide.
    """
    from moe_perception.model import MCDropout

    kind = metadata.arch.kind
    names = expert_names(metadata)
    base: dict[str, ViewFn] = {}
    others: list[Family] = []
    for token in requested:
        if token == kind:
            base[kind] = _identity
        elif token == "ensemble" and kind == "moe":
            base["ensemble"] = ensemble_view
        elif token == "experts" and kind in ("moe", "ensemble"):
            for index, name in enumerate(names):
                base[f"expert:{name}"] = expert_view(index)
        elif token.startswith("expert:") and token[7:] in names and kind in ("moe", "ensemble"):
            base[token] = expert_view(names.index(token[7:]))
        elif token == "mc_dropout" or token.startswith("mc_dropout:"):
            name = token[11:] if ":" in token else names[0]
            if name not in names:
                raise ValueError(f"no expert {name!r} for MC dropout; experts: {list(names)}")
            expert = model.experts[names.index(name)]
            view = "mc_dropout" if len(names) == 1 else f"mc_dropout:{name}"
            others.append(Family(MCDropout(expert, mc_samples).eval(), {view: _identity}))
        else:
            raise ValueError(
                f"view {token!r} is not available for a {kind} checkpoint with experts "
                f"{list(names)}; choose from {kind}, ensemble, experts, expert:NAME, "
                "mc_dropout[:NAME]"
            )
    families = [Family(model, base)] if base else []
    return families + others


# -- frames ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    images: Tensor  # (B, 3, h, w) normalised at the network input size
    labels: Tensor  # (B, H, W) long
    names: tuple[str, ...]
    raw: tuple[np.ndarray, ...]  # the (possibly corrupted) RGB frames
    sequences: tuple[str, ...] = ()  # recording sequence / scene / city of each frame


def frame_indices(total: int, limit: int) -> list[int]:
    """All indices, or ``limit`` evenly spaced ones."""
    if limit <= 0 or limit >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / max(limit - 1, 1)) for i in range(limit)})


def iterate_batches(
    data: DataConfig,
    condition: Condition,
    metadata: CheckpointMetadata,
    batch_size: int,
    limit: int,
    seed: int,
) -> tuple[int, Iterator[Batch]]:
    """Number of frames and a generator of their batches (labels at full resolution)."""
    from moe_perception.data import open_dataset
    from moe_perception.data.corruptions import corrupt
    from moe_perception.data.transforms import normalize

    subset = condition.subset
    dataset = open_dataset(
        data.dataset,
        data.root,
        subset.splits,
        subset.sequences,
        subset.files,
        subset.fraction,
        data.a2d2_mapping,
    )
    indices = frame_indices(len(dataset), limit)

    def generate() -> Iterator[Batch]:
        for start in range(0, len(indices), batch_size):
            chosen = indices[start : start + batch_size]
            samples = [dataset[i] for i in chosen]
            sequences = [dataset.sequence_of(i) for i in chosen]
            if len({s.label.shape for s in samples}) > 1:  # different sizes: one at a time
                for sample, sequence in zip(samples, sequences):
                    yield make_batch([sample], [sequence])
                continue
            yield make_batch(samples, sequences)

    def make_batch(samples, sequences) -> Batch:
        raws, tensors = [], []
        for sample in samples:
            image = sample.image
            if condition.corruption:
                image = corrupt(image, condition.corruption, condition.severity, seed, sample.name)
            raws.append(image)
            tensors.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        images = torch.stack(tensors).float() / 255.0
        images = F.interpolate(
            images, size=metadata.input_size, mode="bilinear", align_corners=False, antialias=True
        )
        labels = torch.stack([torch.from_numpy(s.label.astype(np.int64)) for s in samples])
        return Batch(
            normalize(images, metadata.mean, metadata.std),
            labels,
            tuple(s.name for s in samples),
            tuple(raws),
            tuple(sequences),
        )

    return len(indices), generate()


def resize_output(output: ModelOutput, size: tuple[int, int]) -> ModelOutput:
    """Upsample a model output's fused logits to ``size`` (the experts' logits and gate
    weights stay at the decoder's resolution, where the maps are computed)."""
    if tuple(output.logits.shape[-2:]) == tuple(size):
        return output
    return ModelOutput(
        upsample(output.logits.float(), size),
        output.expert_logits,
        output.gate_weights,
        output.class_gate_weights,
    )


# -- accumulation ------------------------------------------------------------------------


@dataclass
class ViewState:
    """Per-image sums of one view on one condition (memory: images x bins, not pixels)."""

    num_classes: int
    temperature: float
    edges: Tensor
    names: list[str] = field(default_factory=list)
    sequences: list[str] = field(default_factory=list)
    confusion: list[Tensor] = field(default_factory=list)  # (C*C,)
    calibration: list[Tensor] = field(default_factory=list)  # (3*M,)
    scalars: list[Tensor] = field(default_factory=list)  # brier, nll, pixels
    map_hist: list[Tensor] = field(default_factory=list)  # (maps, 2, bins) int32
    map_means: list[Tensor] = field(default_factory=list)  # (maps,) over all pixels
    routing_image: list[tuple[int, int, float]] = field(default_factory=list)
    routing_pixels: Tensor | None = None  # (2, bins): favourite expert is / is not best
    raw_calibration: Tensor | None = None  # (3, M) at T = 1
    raw_scalars: Tensor | None = None  # brier, nll, pixels at T = 1

    def update(
        self,
        output: ModelOutput,
        labels: Tensor,
        names: Sequence[str],
        sequences: Sequence[str] = (),
    ) -> None:
        """Add a batch at label resolution: output (B, ...) and labels (B, H, W)."""
        self.sequences += list(sequences) or [""] * len(names)
        c = self.num_classes
        t = self.temperature
        maps = uncertainty_maps(output, t)
        # max(dim).indices: argmax's first-maximum rule, several times faster on the CPU.
        predicted = output.logits.max(dim=1).indices
        true_log_probs = mixture_true_class_log_probs(output, labels, maps.probs, t)
        raw_probs = raw_log_probs = None
        if t != 1.0:
            raw_probs = mixture_probs(output, 1.0)
            raw_log_probs = mixture_true_class_log_probs(output, labels, raw_probs, 1.0)
        k = output.expert_logits.shape[1]
        routed = k > 1 and not _uniform(output.gate_weights)
        for i, name in enumerate(names):
            label = labels[i : i + 1]
            valid = label != IGNORE_INDEX
            pred = predicted[i : i + 1]
            correct = (pred == label) & valid
            probs = maps.probs[i : i + 1]
            self.names.append(name)
            self.confusion.append(confusion_matrix(pred, label, c).flatten())
            hist, scalars = _calibration_sums(probs, true_log_probs[i : i + 1], label)
            self.calibration.append(hist.flatten())
            self.scalars.append(scalars)
            hist, means = [], []
            for map_name in EVAL_MAPS:
                values = getattr(maps, map_name)[i : i + 1]
                hist.append(score_histograms(values, ~correct, self.edges, valid))
                means.append(float(values.mean()))
            self.map_hist.append(torch.stack(hist).to(torch.int32))
            self.map_means.append(torch.tensor(means, dtype=torch.float64))
            if routed:
                self._routing(output, i, label, valid, maps.gate_entropy[i : i + 1], t)
            if raw_probs is not None and raw_log_probs is not None:
                hist, scalars = _calibration_sums(
                    raw_probs[i : i + 1], raw_log_probs[i : i + 1], label
                )
                self.raw_calibration = _add(self.raw_calibration, hist)
                self.raw_scalars = _add(self.raw_scalars, scalars)

    def _routing(
        self, output: ModelOutput, i: int, label: Tensor, valid: Tensor, entropy: Tensor, t: float
    ) -> None:
        """Does gate entropy flag where the gate's favourite expert is not the best one?"""
        k = output.expert_logits.shape[1]
        size = (label.shape[-2], label.shape[-1])
        target = label.clamp(max=self.num_classes - 1)[:, None]  # (1, 1, H, W)
        # Each expert's probabilities upsampled as the mixture's are, one expert at a time
        # (C planes at label resolution, not K * C). The log is floored at float32's
        # smallest normal number: enough to rank experts, which is all this is for.
        true_class = torch.cat(
            [
                upsample((output.expert_logits[i : i + 1, j].float() / t).softmax(dim=1), size)
                .gather(1, target)
                .clamp_min_(_TINY)
                .log_()
                for j in range(k)
            ],
            dim=1,
        )  # (1, K, H, W)
        best = true_class.argmax(dim=1)  # (1, H, W)
        weights = output.gate_weights[i : i + 1].float()
        if weights.shape[-2:] != (1, 1):  # per-pixel weights; image-level ones broadcast
            weights = upsample(weights, size)
        favourite = weights.expand_as(true_class).argmax(dim=1)
        hist = score_histograms(entropy, favourite != best, self.edges, valid)
        self.routing_pixels = _add(self.routing_pixels, hist)
        mask = valid[:, None].expand_as(true_class)
        nll_k = -(true_class * mask).sum(dim=(0, 2, 3)) / mask[:, 0].sum().clamp(min=1)
        image_weights = output.gate_weights[i].float().mean(dim=(1, 2))
        self.routing_image.append(
            (int(image_weights.argmax()), int(nll_k.argmin()), float(entropy.mean()))
        )

    # -- totals ----------------------------------------------------------------------

    def stacked(self) -> dict[str, Tensor]:
        return {
            "confusion": torch.stack(self.confusion).double(),
            "calibration": torch.stack(self.calibration),
            "scalars": torch.stack(self.scalars),
            "map_hist": torch.stack(self.map_hist),
            "map_means": torch.stack(self.map_means),
        }

    def select(self, indices: Sequence[int]) -> ViewState:
        """The state of some of the images (per-image sums only: no pixel-level routing
        histogram, no T = 1 calibration)."""
        part = ViewState(self.num_classes, self.temperature, self.edges)
        for key in ("names", "sequences", "confusion", "calibration", "scalars"):
            setattr(part, key, [getattr(self, key)[i] for i in indices])
        part.map_hist = [self.map_hist[i] for i in indices]
        part.map_means = [self.map_means[i] for i in indices]
        if self.routing_image:
            part.routing_image = [self.routing_image[i] for i in indices]
        return part

    def total_map_hist(self) -> Tensor:
        """(maps, 2, bins) int64: row 0 correct, row 1 misclassified."""
        return torch.stack(self.map_hist).sum(dim=0, dtype=torch.int64)


def _add(total: Tensor | None, value: Tensor) -> Tensor:
    return value if total is None else total + value


def _calibration_sums(
    probs: Tensor, true_log_probs: Tensor, label: Tensor
) -> tuple[Tensor, Tensor]:
    """Calibration histogram (3, M) and (Brier sum, NLL sum, pixels) of one image."""
    hist = probs_calibration_histogram(probs, label, CALIBRATION_BINS)
    brier, pixels = brier_sum(probs, label)
    nll = -float(true_log_probs[label != IGNORE_INDEX].double().sum())
    return hist, torch.tensor([brier, nll, float(pixels)], dtype=torch.float64)


def _uniform(weights: Tensor) -> bool:
    k = weights.shape[1]
    return bool(torch.allclose(weights, torch.full_like(weights, 1.0 / k)))


# -- summaries ---------------------------------------------------------------------------


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def choose_thresholds(state: ViewState) -> dict[str, int]:
    """Per map, the bin-edge index maximising PAvPU on this (validation) condition."""
    hist = state.total_map_hist()
    chosen = {}
    for m, name in enumerate(EVAL_MAPS):
        pavpu = conditional_correctness(hist[m, 0], hist[m, 1])["pavpu"]
        chosen[name] = int(torch.nan_to_num(pavpu, nan=-1.0).argmax())
    return chosen


def _curve_points(edges: Tensor) -> list[int]:
    """Edge indices nearest to thresholds 0, 0.01, ..., 1 (for plots)."""
    targets = torch.linspace(0, 1, 101, dtype=torch.float64)
    return sorted({int((edges - t).abs().argmin()) for t in targets})


def summarize(
    state: ViewState,
    class_names: Sequence[str],
    thresholds: dict[str, int] | None,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Every metric of one view on one condition, with bootstrap intervals over images."""
    per = state.stacked()
    n_images = len(state.names)
    confusion = per["confusion"].sum(0).view(state.num_classes, state.num_classes)
    calibration = per["calibration"].sum(0).view(3, CALIBRATION_BINS)
    brier, nll, pixels = per["scalars"].sum(0).tolist()
    weights = bootstrap_weights(n_images, resamples, seed) if resamples > 0 else None
    c = state.num_classes

    def interval(tensor: Tensor, fn: Callable[[Tensor], float]) -> list[float | None] | None:
        if weights is None:
            return None
        low, high = bootstrap_interval(tensor, fn, weights)
        return [_nan_to_none(low), _nan_to_none(high)]

    iou = iou_from_confusion(confusion)
    result: dict[str, Any] = {
        "frames": n_images,
        "pixels": int(pixels),
        "temperature": state.temperature,
        "miou": miou_from_confusion(confusion),
        "miou_ci": interval(per["confusion"], lambda s: miou_from_confusion(s.view(c, c))),
        "pixel_accuracy": float(confusion.diagonal().sum() / confusion.sum().clamp(min=1)),
        "iou": {name: _nan_to_none(float(v)) for name, v in zip(class_names, iou)},
        "ece": ece_from_histogram(calibration),
        "ece_ci": interval(
            per["calibration"], lambda s: ece_from_histogram(s.view(3, CALIBRATION_BINS))
        ),
        "mce": mce_from_histogram(calibration),
        "brier": brier / max(pixels, 1),
        "brier_ci": interval(per["scalars"], lambda s: float(s[0] / s[2])),
        "nll": nll / max(pixels, 1),
        "nll_ci": interval(per["scalars"], lambda s: float(s[1] / s[2])),
        "reliability": reliability_from_histogram(calibration),
    }
    if state.raw_calibration is not None and state.raw_scalars is not None:
        raw_brier, raw_nll, raw_pixels = state.raw_scalars.tolist()
        result["uncalibrated"] = {
            "ece": ece_from_histogram(state.raw_calibration),
            "mce": mce_from_histogram(state.raw_calibration),
            "brier": raw_brier / max(raw_pixels, 1),
            "nll": raw_nll / max(raw_pixels, 1),
        }
    hist = per["map_hist"].sum(0, dtype=torch.int64)  # (maps, 2, bins)
    points = _curve_points(state.edges)
    maps: dict[str, Any] = {}
    for m, name in enumerate(EVAL_MAPS):
        correct, wrong = hist[m, 0], hist[m, 1]
        curves = conditional_correctness(correct, wrong)
        entry: dict[str, Any] = {
            "mean": float(per["map_means"][:, m].mean()),
            "auroc": _nan_to_none(auroc_from_histograms(correct, wrong)),
            "auroc_tie_bound": _nan_to_none(auroc_tie_bound(correct, wrong)),
            "auroc_ci": interval(
                per["map_hist"][:, m], lambda s: auroc_from_histograms(s[0], s[1])
            ),
            "fpr95": _nan_to_none(fpr_at_tpr_from_histograms(correct, wrong)),
            "fpr95_ci": interval(
                per["map_hist"][:, m], lambda s: fpr_at_tpr_from_histograms(s[0], s[1])
            ),
            "best_pavpu_here": _nan_to_none(float(torch.nan_to_num(curves["pavpu"]).max())),
            "curves": {
                "threshold": [float(state.edges[j]) for j in points],
                **{key: [_nan_to_none(float(v[j])) for j in points] for key, v in curves.items()},
            },
        }
        if thresholds is not None:
            j = thresholds[name]
            entry["threshold"] = float(state.edges[j])
            for key, values in curves.items():
                entry[key] = _nan_to_none(float(values[j]))

            def at_threshold(s: Tensor, key: str, j: int = j) -> float:
                return float(conditional_correctness(s[0], s[1])[key][j])

            entry["pavpu_ci"] = interval(
                per["map_hist"][:, m], lambda s, f=at_threshold: f(s, "pavpu")
            )
        maps[name] = entry
    result["maps"] = maps
    if state.routing_image:
        rows = torch.tensor(state.routing_image, dtype=torch.float64)
        wrong_favourite = rows[:, 0] != rows[:, 1]
        routing: dict[str, Any] = {
            "image_auroc": _nan_to_none(auroc_exact(rows[:, 2], wrong_favourite)),
            "image_wrong_favourite_rate": float(wrong_favourite.double().mean()),
        }
        if state.routing_pixels is not None:
            pixels = state.routing_pixels
            routing["pixel_auroc"] = _nan_to_none(auroc_from_histograms(pixels[0], pixels[1]))
            routing["pixel_wrong_favourite_rate"] = float(pixels[1].sum() / pixels.sum())
        result["routing"] = routing
    return result


def ood_metrics(reference: ViewState, ood: ViewState) -> dict[str, Any]:
    """AUROC of each map for telling OOD frames (mean map) and pixels from the reference."""
    ref_hist = reference.total_map_hist().sum(dim=1)  # (maps, bins) over valid pixels
    ood_hist = ood.total_map_hist().sum(dim=1)
    ref_means = torch.stack(reference.map_means)
    ood_means = torch.stack(ood.map_means)
    positive = torch.cat(
        [
            torch.zeros(len(ref_means), dtype=torch.bool),
            torch.ones(len(ood_means), dtype=torch.bool),
        ]
    )
    result = {}
    for m, name in enumerate(EVAL_MAPS):
        scores = torch.cat([ref_means[:, m], ood_means[:, m]])
        result[name] = {
            "frames_auroc": _nan_to_none(auroc_exact(scores, positive)),
            "pixels_auroc": _nan_to_none(auroc_from_histograms(ref_hist[m], ood_hist[m])),
            "pixels_auroc_tie_bound": _nan_to_none(auroc_tie_bound(ref_hist[m], ood_hist[m])),
        }
    return result


# -- the run -----------------------------------------------------------------------------


@dataclass
class Example:
    """A frame kept for the report: input, labels, prediction and maps of the main view."""

    condition: str
    name: str
    image: np.ndarray
    label: np.ndarray
    predicted: np.ndarray
    maps: dict[str, np.ndarray]


def _forward(families: list[Family], batch: Batch, device: torch.device) -> dict[str, ModelOutput]:
    size = tuple(batch.labels.shape[-2:])
    outputs: dict[str, ModelOutput] = {}
    for family in families:
        with torch.inference_mode():
            output = family.model(batch.images.to(device))
            output = ModelOutput(
                output.logits.float().cpu(),
                output.expert_logits.float().cpu(),
                output.gate_weights.float().cpu(),
                None if output.class_gate_weights is None else output.class_gate_weights.cpu(),
            )
            output = resize_output(output, size)
            for name, view in family.views.items():
                outputs[name] = view(output)
    return outputs


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: DataConfig,
    settings: EvalConfig,
    conditions: Sequence[Condition] | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[dict[str, Any], list[Example]]:
    """Evaluate a checkpoint and its derived baselines on every condition.

    Args:
        checkpoint: a moe_perception checkpoint.
        data: dataset name and root.
        settings: views, temperature mode, bootstrap, limits.
        conditions: what to evaluate (default :func:`study_conditions` of ``settings``).
            At most one ``validation`` condition, which fits temperatures (mode ``fit``)
            and chooses the PAvPU thresholds; OOD conditions are compared against the
            ``test`` condition.
        device: ``cpu``, ``cuda`` or ``auto``.
        progress: show progress bars.

    Returns:
        The results (JSON-ready) and example frames for the report.
    """
    from tqdm import tqdm

    from moe_perception.checkpoint import load_checkpoint
    from moe_perception.segmenter import resolve_device

    conditions = list(conditions if conditions is not None else study_conditions(settings))
    roles = [c.role for c in conditions]
    if roles.count("validation") > 1 or roles.count("test") > 1:
        raise ValueError("evaluate at most one validation and one test condition per run")
    model, metadata = load_checkpoint(checkpoint)
    target = resolve_device(device)
    model = model.to(target)
    families = build_families(model, metadata, settings.models, settings.mc_samples)
    for family in families:
        family.model.to(target).eval()
    views = [name for family in families for name in family.views]
    main_view = views[0]
    edges = uncertainty_bin_edges()
    c = metadata.arch.num_classes
    if settings.temperature == "checkpoint":
        temperatures = dict.fromkeys(views, metadata.temperature)
    else:
        temperatures = dict.fromkeys(views, 1.0)
    fit_report: dict[str, Any] = {}

    def run(condition: Condition, states: dict[str, ViewState] | None, reservoirs=None):
        total, batches = iterate_batches(
            data, condition, metadata, settings.batch_size, settings.limit, settings.seed
        )
        keep = set(frame_indices(total, settings.examples)) if settings.examples else set()
        examples: list[Example] = []
        seen = 0
        bar = tqdm(total=total, desc=condition.name, disable=not progress, leave=False)
        for batch in batches:
            outputs = _forward(families, batch, target)
            for name, output in outputs.items():
                if reservoirs is not None:
                    reservoirs[name].update(output, batch.labels)
                if states is not None:
                    states[name].update(output, batch.labels, batch.names, batch.sequences)
            if states is not None and condition.role != "validation":
                main = outputs[main_view]
                maps = uncertainty_maps(main, temperatures[main_view])
                for i in range(len(batch.names)):
                    if seen + i in keep:
                        examples.append(
                            Example(
                                condition.name,
                                batch.names[i],
                                batch.raw[i],
                                batch.labels[i].numpy().astype(np.uint8),
                                main.logits[i].argmax(0).numpy().astype(np.uint8),
                                {m: getattr(maps, m)[i].numpy() for m in MAP_NAMES},
                            )
                        )
            seen += len(batch.names)
            bar.update(len(batch.names))
        bar.close()
        return examples

    validation = next((cond for cond in conditions if cond.role == "validation"), None)
    if settings.temperature == "fit":
        if validation is None:
            raise ValueError("temperature mode 'fit' needs a validation subset")
        reservoirs = {name: LogitReservoir(seed=settings.seed) for name in views}
        run(validation, None, reservoirs)
        for name in views:
            output, labels = reservoirs[name].as_output()
            t, before, after = fit_temperature(output, labels)
            temperatures[name] = t
            fit_report[name] = {
                "temperature": t,
                "nll_before": before,
                "nll_after": after,
                "pixels": len(reservoirs[name]),
            }
    results: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "model": metadata.arch.name,
        "encoder": metadata.arch.encoder,
        "expert_names": list(expert_names(metadata)),
        "checkpoint_temperature": metadata.temperature,
        "dataset": data.dataset,
        "views": views,
        "temperature_mode": settings.temperature,
        "temperatures": temperatures,
        "temperature_fit": fit_report,
        "settings": {
            "bootstrap": settings.bootstrap,
            "limit": settings.limit,
            "seed": settings.seed,
            "mc_samples": settings.mc_samples,
            "calibration_bins": CALIBRATION_BINS,
            "uncertainty_bins": int(edges.numel() - 1),
        },
        "conditions": {},
    }
    examples: list[Example] = []
    thresholds: dict[str, dict[str, int]] | None = None
    reference: dict[str, ViewState] | None = None
    order = sorted(conditions, key=lambda cond: ("validation", "test", "ood").index(cond.role))
    for condition in order:
        states = {name: ViewState(c, temperatures[name], edges) for name in views}
        examples += run(condition, states)
        if condition.role == "validation":
            thresholds = {name: choose_thresholds(states[name]) for name in views}
            results["thresholds"] = {
                name: {m: float(edges[j]) for m, j in chosen.items()}
                for name, chosen in thresholds.items()
            }
        summaries = {
            name: summarize(
                states[name],
                metadata.class_names,
                None if thresholds is None else thresholds[name],
                settings.bootstrap,
                settings.seed,
            )
            for name in views
        }
        by_sequence: dict[str, Any] = {}
        first_state = states[views[0]]
        groups = sorted(set(first_state.sequences))
        if condition.role == "test" and len(groups) > 1:
            for sequence in groups:
                indices = [i for i, s in enumerate(first_state.sequences) if s == sequence]
                by_sequence[sequence] = {
                    name: summarize(
                        states[name].select(indices),
                        metadata.class_names,
                        None if thresholds is None else thresholds[name],
                        settings.bootstrap,
                        settings.seed,
                    )
                    for name in views
                }
        if condition.role == "test":
            reference = states
        elif condition.role == "ood" and reference is not None:
            for name in views:
                summaries[name]["ood"] = ood_metrics(reference[name], states[name])
        results["conditions"][condition.name] = {
            "role": condition.role,
            "subset": condition.subset.describe(),
            "corruption": condition.corruption,
            "severity": condition.severity,
            "views": summaries,
        }
        if by_sequence:
            results["conditions"][condition.name]["by_sequence"] = by_sequence
    return results, examples
