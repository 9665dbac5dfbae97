"""The evaluator's per-image state against brute force on hand-made model outputs."""

from __future__ import annotations

import math

import pytest
import torch

from moe_perception.metrics import auroc_exact, auroc_from_histograms, uncertainty_bin_edges
from moe_perception.model import ModelOutput, upsample
from moe_perception.training.evaluate import (
    EVAL_MAPS,
    ViewState,
    choose_thresholds,
    ood_metrics,
    summarize,
)
from moe_perception.uncertainty import uncertainty_maps

CLASSES = tuple(f"c{i}" for i in range(4))


def _output(seed: int, batch: int = 3, spatial: bool = True) -> tuple[ModelOutput, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    expert_logits = torch.randn(batch, 2, 4, 5, 6, generator=generator) * 2
    if spatial:
        weights = torch.rand(batch, 2, 5, 6, generator=generator)
    else:
        weights = torch.rand(batch, 2, 1, 1, generator=generator)
    weights = weights / weights.sum(1, keepdim=True)
    fused = (weights.unsqueeze(2) * expert_logits).sum(1)
    labels = torch.randint(0, 4, (batch, 5, 6), generator=generator)
    labels[:, 0, 0] = 255
    return ModelOutput(fused, expert_logits, weights), labels


def test_routing_and_map_histograms_match_brute_force() -> None:
    output, labels = _output(0)
    state = ViewState(4, 1.0, uncertainty_bin_edges())
    state.update(output, labels, ["a", "b", "c"], ["s", "s", "t"])
    maps = uncertainty_maps(output)
    valid = labels != 255
    # Per pixel: favourite = argmax gate weight; best = expert with the highest p(true class).
    probs = output.expert_logits.softmax(2)
    truth = probs.gather(2, labels.clamp(max=3)[:, None, None].expand(-1, 2, -1, -1, -1))[:, :, 0]
    wrong_favourite = output.gate_weights.argmax(1) != truth.argmax(1)
    exact = auroc_exact(maps.gate_entropy[valid], wrong_favourite[valid])
    hist = state.routing_pixels
    assert int(hist.sum()) == int(valid.sum())
    assert int(hist[1].sum()) == int(wrong_favourite[valid].sum())
    # Scores differ across pixels here, so only the tie bound separates the two.
    approx = auroc_from_histograms(hist[0], hist[1])
    bound = 0.5 * float((hist[0].double() * hist[1]).sum()) / float(hist[0].sum() * hist[1].sum())
    assert abs(approx - exact) <= bound + 1e-12
    # Per image: lowest NLL expert vs the favourite of the mean weights.
    for i, (favourite, best, score) in enumerate(state.routing_image):
        nll = [
            -(probs[i, k].gather(0, labels[i].clamp(max=3)[None])[0].log()[valid[i]]).mean()
            for k in range(2)
        ]
        assert best == int(torch.stack(nll).argmin())
        assert favourite == int(output.gate_weights[i].mean(dim=(1, 2)).argmax())
        assert score == pytest.approx(float(maps.gate_entropy[i].mean()))
    # Map histograms: misclassified pixels per map agree with argmax of the fused logits.
    wrong = (output.logits.argmax(1) != labels) & valid
    for m, name in enumerate(EVAL_MAPS):
        total = state.total_map_hist()[m]
        assert int(total[1].sum()) == int(wrong.sum()) and int(total.sum()) == int(valid.sum())
        means = torch.stack(state.map_means)[:, m]
        assert torch.allclose(means, getattr(maps, name).mean(dim=(1, 2)).double(), atol=1e-6)


def test_summary_and_selection_and_ood() -> None:
    output, labels = _output(1, batch=4, spatial=False)
    state = ViewState(4, 1.0, uncertainty_bin_edges())
    state.update(output, labels, list("abcd"), ["s", "s", "t", "t"])
    thresholds = choose_thresholds(state)
    summary = summarize(state, CLASSES, thresholds, resamples=20, seed=0)
    pe = summary["maps"]["predictive_entropy"]
    assert pe["pavpu"] == pytest.approx(pe["best_pavpu_here"])  # chosen on these images
    part = summarize(state.select([0, 1]), CLASSES, thresholds, resamples=0, seed=0)
    rest = summarize(state.select([2, 3]), CLASSES, thresholds, resamples=0, seed=0)
    assert part["pixels"] + rest["pixels"] == summary["pixels"]
    assert "pixel_auroc" not in part["routing"] and "image_auroc" in part["routing"]
    # OOD: frame AUROC from per-frame means; pixel AUROC from the valid-pixel histograms.
    shifted, shifted_labels = _output(2, batch=3, spatial=False)
    shifted = ModelOutput(shifted.logits * 0.2, shifted.expert_logits * 0.2, shifted.gate_weights)
    ood_state = ViewState(4, 1.0, uncertainty_bin_edges())
    ood_state.update(shifted, shifted_labels, list("xyz"))
    result = ood_metrics(state, ood_state)
    reference = uncertainty_maps(output).predictive_entropy
    ood_maps = uncertainty_maps(shifted).predictive_entropy
    scores = torch.cat([reference.mean(dim=(1, 2)), ood_maps.mean(dim=(1, 2))])
    positive = torch.tensor([False] * 4 + [True] * 3)
    pe_ood = result["predictive_entropy"]
    assert pe_ood["frames_auroc"] == pytest.approx(auroc_exact(scores, positive))
    exact_pixels = auroc_exact(
        torch.cat([reference[labels != 255], ood_maps[shifted_labels != 255]]),
        torch.cat(
            [
                torch.zeros(int((labels != 255).sum()), dtype=torch.bool),
                torch.ones(int((shifted_labels != 255).sum()), dtype=torch.bool),
            ]
        ),
    )
    assert abs(pe_ood["pixels_auroc"] - exact_pixels) <= pe_ood["pixels_auroc_tie_bound"] + 1e-12
    assert not math.isnan(pe_ood["pixels_auroc"])


def test_temperature_changes_calibration_not_labels() -> None:
    output, labels = _output(3, spatial=False)
    cold = ViewState(4, 1.0, uncertainty_bin_edges())
    hot = ViewState(4, 2.0, uncertainty_bin_edges())
    cold.update(output, labels, list("abc"))
    hot.update(output, labels, list("abc"))
    a = summarize(cold, CLASSES, None, 0, 0)
    b = summarize(hot, CLASSES, None, 0, 0)
    assert a["miou"] == b["miou"] and a["nll"] != b["nll"]
    # The T = 1 numbers reported alongside equal those of the untempered state.
    assert b["uncalibrated"]["nll"] == pytest.approx(a["nll"])
    assert b["uncalibrated"]["ece"] == pytest.approx(a["ece"])
    assert "uncalibrated" not in a


def test_routing_at_label_resolution_reads_upsampled_experts() -> None:
    # Experts and gate at 5 x 6, labels at 20 x 24: as the models and evaluation run.
    small, _ = _output(4)
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 4, (3, 20, 24), generator=generator)
    labels[:, :2] = 255
    output = ModelOutput(upsample(small.logits, (20, 24)), small.expert_logits, small.gate_weights)
    state = ViewState(4, 1.3, uncertainty_bin_edges())
    state.update(output, labels, ["a", "b", "c"])
    valid = labels != 255
    probs = torch.stack(
        [upsample((small.expert_logits[:, k] / 1.3).softmax(1), (20, 24)) for k in range(2)], 1
    )
    truth = probs.gather(2, labels.clamp(max=3)[:, None, None].expand(-1, 2, -1, -1, -1))
    best = truth[:, :, 0].argmax(1)
    favourite = upsample(small.gate_weights, (20, 24)).argmax(1)
    hist = state.routing_pixels
    assert int(hist.sum()) == int(valid.sum())
    assert int(hist[1].sum()) == int((favourite != best)[valid].sum())
    wrong = (output.logits.argmax(1) != labels) & valid
    assert int(state.total_map_hist()[0][1].sum()) == int(wrong.sum())
