"""Evaluation: derived baselines, metrics against brute force, temperature, CLI outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moe_perception.checkpoint import load_checkpoint, read_checkpoint
from moe_perception.cli import main
from moe_perception.data import open_dataset
from moe_perception.data.transforms import normalize
from moe_perception.metrics import auroc_exact, fpr_at_tpr_exact
from moe_perception.model import Ensemble, ModelOutput, SingleExpert, upsample
from moe_perception.training.calibration import LogitReservoir, fit_temperature
from moe_perception.training.config import DataConfig, EvalConfig, Subset
from moe_perception.training.evaluate import (
    Condition,
    ensemble_view,
    evaluate_checkpoint,
    expert_view,
    frame_indices,
    parse_condition,
    resize_output,
)
from moe_perception.uncertainty import uncertainty_maps


def test_views_equal_the_baseline_models(tiny_checkpoint: Path) -> None:
    model, _ = load_checkpoint(tiny_checkpoint)
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        output = model(images)
        ensemble = Ensemble(list(model.experts))(images)
        single = SingleExpert(model.experts[1])(images)
    derived = ensemble_view(output)
    assert torch.allclose(derived.logits, ensemble.logits, atol=1e-5)
    assert torch.equal(derived.gate_weights, ensemble.gate_weights)
    alone = expert_view(1)(output)
    assert torch.allclose(alone.logits, single.logits, atol=1e-5)
    assert alone.expert_logits.shape[1] == 1 and torch.equal(
        alone.gate_weights, single.gate_weights
    )


def test_parse_condition_grammar() -> None:
    c = parse_condition("dusk=test:0001TP")
    assert c.name == "dusk" and c.subset == Subset(("test",), ("0001TP",))
    c = parse_condition("train,val:0006R0,0016E5@0.8-1+fog:3", "ood")
    assert c.subset.splits == ("train", "val") and c.subset.fraction == (0.8, 1.0)
    assert (c.corruption, c.severity, c.role) == ("fog", 3, "ood")
    with pytest.raises(ValueError, match="cannot read subset"):
        parse_condition("test:")
    with pytest.raises(ValueError, match="bad corruption"):
        parse_condition("test+snow:2")
    assert frame_indices(10, 3) == [0, 4, 9] and frame_indices(3, 0) == [0, 1, 2]


def test_temperature_fit_recovers_a_known_temperature() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 1, 5, 1, 1, generator=generator) * 4
    labels = torch.multinomial((logits[:, 0, :, 0, 0] / 2.5).softmax(1), 1, generator=generator)
    weights = torch.ones(20000, 1, 1, 1)
    output = ModelOutput(logits[:, 0], logits, weights)
    temperature, before, after = fit_temperature(output, labels[:, :, None])
    assert temperature == pytest.approx(2.5, rel=0.05)
    assert after < before


def test_reservoir_is_bounded_uniform_and_skips_void() -> None:
    reservoir = LogitReservoir(capacity=50, seed=0)
    offered = []
    for step in range(3):
        logits = (
            torch.arange(2 * 1 * 3 * 4 * 5, dtype=torch.float32).view(2, 1, 3, 4, 5) + 1000 * step
        )
        labels = torch.randint(0, 3, (2, 4, 5), generator=torch.Generator().manual_seed(step))
        labels[:, 0] = 255
        output = ModelOutput(logits[:, 0], logits, torch.ones(2, 1, 1, 1))
        reservoir.update(output, labels)
        valid = labels != 255
        offered.append(logits.permute(0, 3, 4, 1, 2).reshape(-1, 1, 3)[valid.reshape(-1)])
    assert len(reservoir) == 50 and reservoir.seen == 3 * 30
    pool = torch.cat(offered)
    sample, labels = reservoir.as_output()
    # Same resolution: each pixel's first component is itself, with all the weight.
    assert sample.expert_logits.shape == (50, 4, 3, 1, 1)
    torch.testing.assert_close(
        sample.gate_weights[:, :, 0, 0], torch.tensor([1.0, 0, 0, 0]).expand(50, 4)
    )
    for row in sample.expert_logits[:, :1, :, 0, 0]:
        assert (pool == row).all(dim=(1, 2)).any()
    assert labels.shape == (50, 1, 1) and int(labels.max()) < 3


def test_reservoir_nll_is_that_of_the_upsampled_mixture() -> None:
    from moe_perception.training.calibration import mean_nll, mixture_probs

    generator = torch.Generator().manual_seed(3)
    expert_logits = torch.randn(2, 2, 4, 3, 5, generator=generator) * 3
    weights = torch.rand(2, 2, 3, 5, generator=generator).softmax(dim=1)
    output = ModelOutput(torch.zeros(2, 4, 12, 20), expert_logits, weights)
    labels = torch.randint(0, 4, (2, 12, 20), generator=generator)
    reservoir = LogitReservoir(capacity=10_000, seed=0)  # keeps every pixel
    reservoir.update(output, labels)
    sample, sample_labels = reservoir.as_output()
    assert len(reservoir) == labels.numel()
    for temperature in (1.0, 1.7):
        probs = mixture_probs(output, temperature)
        expected = -probs.gather(1, labels[:, None]).log().mean()
        got = mean_nll(sample, sample_labels, temperature)
        assert got == pytest.approx(float(expected), rel=1e-5)


def _brute_force(checkpoint: Path, root: Path, names: tuple[str, ...]):
    """Per-pixel lists (fine here: a few tiny frames) of label, prediction, PE and probs."""
    model, metadata = load_checkpoint(checkpoint)
    dataset = open_dataset("camvid", root, ["test"], sequences=["Seq05VD"])
    rows = []
    for sample in dataset:
        image = torch.from_numpy(np.array(sample.image)).permute(2, 0, 1)[None].float() / 255
        image = F.interpolate(
            image, size=metadata.input_size, mode="bilinear", align_corners=False, antialias=True
        )
        with torch.inference_mode():
            output = model(normalize(image, metadata.mean, metadata.std))
        output = resize_output(output, sample.label.shape)
        maps = uncertainty_maps(output)
        label = torch.from_numpy(sample.label.astype(np.int64)).flatten()
        valid = label != 255
        rows.append(
            (
                label[valid],
                output.logits.argmax(1).flatten()[valid],
                maps.predictive_entropy.flatten()[valid],
                maps.probs[0].flatten(1)[:, valid].T,
            )
        )
    return [torch.cat(column) for column in zip(*rows)]


@pytest.mark.slow
def test_evaluation_matches_brute_force(tiny_checkpoint: Path, tiny_camvid: Path) -> None:
    from torchmetrics.functional.classification import multiclass_calibration_error

    settings = EvalConfig(models=("moe", "ensemble", "experts"), bootstrap=30, examples=1)
    conditions = [
        Condition("validation", Subset(("val",)), "validation"),
        Condition("test", Subset(("test",), ("Seq05VD",)), "test"),
        Condition("dusk", Subset(("test",), ("0001TP",)), "ood"),
        Condition("fog-5", Subset(("test",), ("Seq05VD",)), "ood", "fog", 5),
    ]
    data = DataConfig(root=str(tiny_camvid))
    results, examples = evaluate_checkpoint(
        tiny_checkpoint, data, settings, conditions, progress=False
    )
    assert results["views"] == ["moe", "ensemble", "expert:daylight", "expert:dusk"]
    assert set(results["temperature_fit"]) == set(results["views"])
    test = results["conditions"]["test"]["views"]["moe"]
    t = results["temperatures"]["moe"]
    assert test["temperature"] == t and test["frames"] == 2
    label, predicted, entropy, _ = _brute_force(tiny_checkpoint, tiny_camvid, ())
    # mIoU from the brute-force confusion.
    ious = []
    for c in range(11):
        union = int(((label == c) | (predicted == c)).sum())
        if union:
            ious.append(int(((label == c) & (predicted == c)).sum()) / union)
    assert test["miou"] == pytest.approx(sum(ious) / len(ious), abs=1e-9)
    assert test["pixels"] == label.numel()
    # Misclassification AUROC of predictive entropy (at the fitted temperature).
    model, _ = load_checkpoint(tiny_checkpoint)
    pe = test["maps"]["predictive_entropy"]
    assert 0 <= pe["auroc_tie_bound"] < 0.5
    # At T=1 the entropy order is what _brute_force computed; with T the map changes, so
    # rerun the check with temperature none.
    plain, _ = evaluate_checkpoint(
        tiny_checkpoint,
        data,
        EvalConfig(models=("moe",), bootstrap=0, temperature="none", examples=0),
        conditions[1:2],
        progress=False,
    )
    plain_test = plain["conditions"]["test"]["views"]["moe"]
    wrong = predicted != label
    exact = auroc_exact(entropy, wrong)
    bound = plain_test["maps"]["predictive_entropy"]["auroc_tie_bound"]
    assert abs(plain_test["maps"]["predictive_entropy"]["auroc"] - exact) <= bound + 1e-9
    assert (
        plain_test["maps"]["predictive_entropy"]["fpr95"]
        >= fpr_at_tpr_exact(entropy, wrong) - 1e-9
    )
    _, _, _, probs = _brute_force(tiny_checkpoint, tiny_camvid, ())
    reference = multiclass_calibration_error(probs, label, num_classes=11, n_bins=15, norm="l1")
    assert plain_test["ece"] == pytest.approx(float(reference), abs=1e-4)
    # Intervals bracket the estimate; thresholds come from validation; OOD is measured.
    low, high = test["miou_ci"]
    assert low <= test["miou"] + 1e-9 and test["miou"] - 1e-9 <= high
    assert "threshold" in pe and 0 <= pe["pavpu"] <= 1
    dusk = results["conditions"]["dusk"]["views"]["moe"]
    assert set(dusk["ood"]["predictive_entropy"]) == {
        "frames_auroc",
        "pixels_auroc",
        "pixels_auroc_tie_bound",
    }
    assert (
        "routing" in test and "routing" not in results["conditions"]["test"]["views"]["ensemble"]
    )
    assert {e.condition for e in examples} == {"test", "dusk", "fog-5"}


@pytest.mark.slow
def test_cli_calibrate_then_evaluate(
    tiny_checkpoint: Path, tiny_camvid: Path, tmp_path: Path
) -> None:
    calibrated = tmp_path / "calibrated.pt"
    code = main(
        [
            "calibrate",
            str(tiny_checkpoint),
            "--data",
            str(tiny_camvid),
            "--out",
            str(calibrated),
            "--fp16",
            "--quiet",
        ]
    )
    assert code == 0
    metadata, state = read_checkpoint(calibrated)
    fit = metadata.provenance["calibration"]
    assert metadata.temperature == fit["temperature"] > 0 and fit["nll_after"] <= fit["nll_before"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            str(calibrated),
            "--data",
            str(tiny_camvid),
            "--test",
            "test",
            "--ood",
            "dusk=test:0001TP",
            "--corruption",
            "jpeg",
            "--severity",
            "4",
            "--models",
            "moe,mc_dropout:dusk",
            "--temperature",
            "checkpoint",
            "--bootstrap",
            "10",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["conditions"]) == {"validation", "test", "dusk", "jpeg-4"}
    assert results["temperatures"] == {
        "moe": pytest.approx(metadata.temperature),
        "mc_dropout:dusk": pytest.approx(metadata.temperature),
    }
    test = results["conditions"]["test"]
    assert set(test["by_sequence"]) == {"0001TP", "Seq05VD"}
    parts = [views["moe"] for views in test["by_sequence"].values()]
    assert sum(p["frames"] for p in parts) == test["views"]["moe"]["frames"] == 4
    assert sum(p["pixels"] for p in parts) == test["views"]["moe"]["pixels"]
    markdown = (out / "results.md").read_text()
    assert "Sequence 0001TP (2 frames)" in markdown
    assert "## test" in markdown and "mc_dropout:dusk" in markdown
    pngs = sorted(p.name for p in out.rglob("*.png"))
    assert "reliability_test.png" in pngs and "conditional_jpeg-4_moe.png" in pngs
    assert any(name.startswith("dusk_0001TP") for name in pngs)
    from PIL import Image

    with Image.open(out / "plots" / "reliability_test.png") as image:
        assert image.width > 300 and image.height > 200
    assert not math.isnan(results["conditions"]["test"]["views"]["moe"]["miou"])
    summary = tmp_path / "summary.md"
    assert main(["summarize", str(out), "--out", str(summary)]) == 0
    text = summary.read_text()
    assert "| report | moe |" in text and "Claim 3" in text
    # The compact metrics (no curves) summarize the same way without results.json.
    metrics = (out / "metrics.json").read_text()
    assert '"curves"' not in metrics and '"curves"' in (out / "results.json").read_text()
    (out / "results.json").rename(tmp_path / "results.json")
    assert main(["summarize", str(out), "--out", str(summary)]) == 0
    assert summary.read_text() == text
    (tmp_path / "results.json").rename(out / "results.json")
    # The model card takes its numbers from the report and the training log.
    log = tmp_path / "log.jsonl"
    log.write_text(
        '{"stage": "expert_a", "epoch": 1, "loss": 0.5, "val_miou": 0.4, "seconds": 60}\n'
    )
    config = Path(__file__).resolve().parents[2] / "config" / "camvid_default.yaml"
    card = tmp_path / "README.md"
    code = main(
        [
            "model-card",
            str(calibrated),
            "--report",
            str(out),
            "--config",
            str(config),
            "--log",
            str(log),
            "--corruptions",
            str(out),
            "--out",
            str(card),
        ]
    )
    assert code == 0
    text = card.read_text()
    moe = results["conditions"]["test"]["views"]["moe"]
    assert f"{100 * moe['miou']:.1f}" in text and "weights stored in fp16" in text
    assert "## Limits" in text and "`expert_a`: 1 epochs" in text


def test_cli_errors_are_clear(
    tiny_checkpoint: Path, tiny_camvid: Path, tmp_path: Path, capsys
) -> None:
    code = main(
        ["evaluate", str(tiny_checkpoint), "--data", str(tiny_camvid), "--models", "bogus"]
    )
    assert code == 2 and "view 'bogus' is not available" in capsys.readouterr().err
    code = main(
        [
            "evaluate",
            str(tiny_checkpoint),
            "--data",
            str(tiny_camvid),
            "--val",
            "none",
            "--temperature",
            "fit",
        ]
    )
    assert code == 2 and "needs a validation subset" in capsys.readouterr().err
    code = main(["evaluate", str(tmp_path / "missing.pt"), "--data", str(tiny_camvid)])
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, gate, views",
    [
        ("moe", "classwise", ("moe", "ensemble", "experts")),
        ("moe", "spatial", ("moe", "mc_dropout")),
        ("single", "simple", ("single", "mc_dropout")),
    ],
)
def test_every_model_kind_evaluates(
    tiny_camvid: Path, tmp_path: Path, kind: str, gate: str, views: tuple[str, ...]
) -> None:
    from moe_perception.checkpoint import CheckpointMetadata, save_checkpoint
    from moe_perception.data import CAMVID_CLASSES, CAMVID_COLORS
    from moe_perception.model import ArchConfig, build_model

    torch.manual_seed(0)
    k = 2 if kind == "moe" else 1
    arch = ArchConfig(kind=kind, num_experts=k, gate=gate, decoder_channels=32, mc_samples=3)
    path = tmp_path / "model.pt"
    metadata = CheckpointMetadata(
        arch=arch, class_names=CAMVID_CLASSES, class_colors=CAMVID_COLORS, input_size=(32, 48)
    )
    save_checkpoint(path, build_model(arch).eval(), metadata)
    settings = EvalConfig(models=views, bootstrap=5, examples=1, mc_samples=3, limit=2)
    conditions = [
        Condition("validation", Subset(("val",)), "validation"),
        Condition("test", Subset(("test",)), "test"),
        Condition("dark", Subset(("test",)), "ood", "darken", 5),
    ]
    results, _ = evaluate_checkpoint(
        path, DataConfig(root=str(tiny_camvid)), settings, conditions, progress=False
    )
    test = results["conditions"]["test"]["views"]
    for summary in test.values():
        assert 0 <= summary["miou"] <= 1 and summary["frames"] == 2
        assert all(0 <= m["mean"] <= 1 for m in summary["maps"].values())
    if kind == "moe":
        assert "routing" in test["moe"]
        assert "pixel_auroc" in test["moe"]["routing"]
    mc = "mc_dropout" if kind == "single" else "mc_dropout:expert_0"
    if mc in test:
        assert test[mc]["maps"]["mutual_information"]["mean"] > 0
    assert "ood" in results["conditions"]["dark"]["views"][views[0]]


def test_true_class_log_probs_are_exact_where_probabilities_underflow() -> None:
    from moe_perception.training.calibration import (
        mixture_log_probs,
        mixture_probs,
        mixture_true_class_log_probs,
    )

    generator = torch.Generator().manual_seed(0)
    expert_logits = torch.randn(2, 3, 4, 5, 6, generator=generator) * 3
    expert_logits[0, :, 0, 1, 2] = torch.tensor([200.0, 150.0, 180.0])  # class 0 certain
    weights = torch.rand(2, 3, 5, 6, generator=generator).softmax(dim=1)
    output = ModelOutput(expert_logits.mean(1), expert_logits, weights)
    labels = torch.randint(0, 4, (2, 5, 6), generator=generator)
    labels[0, 1, 2] = 3  # a confident mistake: p_y ~ e^-150 underflows float32
    for temperature in (1.0, 0.7):
        probs = mixture_probs(output, temperature)
        got = mixture_true_class_log_probs(output, labels, probs, temperature)
        expected = mixture_log_probs(output, temperature).gather(1, labels[:, None])[:, 0]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert got[0, 1, 2] < -100  # not clamped at the float32 floor
        torch.testing.assert_close(probs, mixture_log_probs(output, temperature).exp())
    # At four times the experts' resolution: the probabilities are the upsampled mixture's,
    # checked in float64 where float32 underflows.
    confident = expert_logits.clone()
    confident[0, :, 0, 0:3, 1:4] = torch.tensor([200.0, 150.0, 180.0])[:, None, None]
    output = ModelOutput(confident.mean(1), confident, weights)
    large = ModelOutput(torch.zeros(2, 4, 20, 24), confident, weights)
    labels = torch.randint(0, 4, (2, 20, 24), generator=generator)
    labels[0, 4:8, 8:12] = 3  # pixels blending only confident decoder pixels
    for temperature in (1.0, 0.7):
        probs = mixture_probs(large, temperature)
        assert probs.shape == (2, 4, 20, 24)
        got = mixture_true_class_log_probs(large, labels, probs, temperature)
        exact = mixture_log_probs(output, temperature).double().exp()
        exact = upsample(exact, (20, 24)).gather(1, labels[:, None])[:, 0].log()
        torch.testing.assert_close(got.double(), exact, atol=1e-5, rtol=1e-5)
        assert got[0, 5, 9] < -100
