"""Two-stage training on tiny generated CamVid: both stages, frozen experts, resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moe_perception.checkpoint import load_checkpoint
from moe_perception.cli import main
from moe_perception.training import trainer
from moe_perception.training.config import load_train_config

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_both_stages_train_and_the_gate_leaves_experts_untouched(
    tiny_camvid: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_camvid, tmp_path / "moe.yaml", gate="classwise", gate_conv=True)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-pretrained"]) == 0
    records = _log(run)
    assert [r["stage"] for r in records] == ["expert_a", "expert_b", "gate"]
    assert all(r["world_size"] == 1 and r["loss"] > 0 for r in records)
    model, metadata = load_checkpoint(run / "model.pt")
    assert metadata.expert_names == ("a", "b") and metadata.arch.gate == "classwise"
    assert metadata.provenance["experts"] == {"a": "train:0006R0", "b": "train:0016E5"}
    # Stage 2 changed neither the experts' weights nor their batch-norm statistics.
    for slot, name in zip(model.experts, ("a", "b")):
        saved = torch.load(run / f"expert_{name}.pt", weights_only=True)
        state = slot.state_dict()
        assert any("running_mean" in key for key in state)
        for key, value in state.items():
            assert torch.equal(value, saved[key]), key
    # ... while the gate and the refinement did learn (the refinement starts at zero).
    assert model.refine is not None and model.refine.weight.abs().sum() > 0
    gate_state = torch.load(run / "state_gate.pt", weights_only=True)
    assert gate_state["epoch"] == 1
    assert torch.equal(gate_state["model"]["gate.out.weight"], model.gate.out.weight)


def test_freeze_experts_sets_eval_mode_and_no_grad() -> None:
    from moe_perception.model import ArchConfig, build_model

    model = build_model(ArchConfig(num_experts=2, decoder_channels=16))
    model.train()
    trainer.freeze_experts(model)
    for expert in model.experts:
        assert not expert.training
        assert not any(p.requires_grad for p in expert.parameters())
    assert model.gate.training and all(p.requires_grad for p in model.gate.parameters())


@pytest.mark.slow
def test_resume_after_an_interruption_matches_an_uninterrupted_run(
    tiny_camvid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_train_config(tiny_config(tiny_camvid, tmp_path / "s.yaml", 2, kind="single"))
    straight = tmp_path / "straight"
    trainer.train(config, straight, pretrained=False)

    resumed = tmp_path / "resumed"
    original = trainer._Logger.write

    def write_then_stop(self, **record):
        original(self, **record)
        raise KeyboardInterrupt  # stop right after epoch 1 was saved and logged

    monkeypatch.setattr(trainer._Logger, "write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, resumed, pretrained=False)
    monkeypatch.setattr(trainer._Logger, "write", original)
    assert [r["epoch"] for r in _log(resumed)] == [1]
    trainer.train(config, resumed, pretrained=False)
    assert [r["epoch"] for r in _log(resumed)] == [1, 2]
    assert [r["loss"] for r in _log(resumed)] == [r["loss"] for r in _log(straight)]
    a = torch.load(straight / "expert_all.pt", weights_only=True)
    b = torch.load(resumed / "expert_all.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_experts_from_reuses_or_names_the_missing_file(tiny_camvid: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    config = load_train_config(tiny_config(tiny_camvid, tmp_path / "m.yaml"))
    config = replace(config, experts_from=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="expert_a.pt not found"):
        trainer.train(config, tmp_path / "run", pretrained=False)


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tiny_camvid: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_camvid, tmp_path / "ddp.yaml")
    run = tmp_path / "ddp"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "moe_perception.cli",
        "train",
        str(config),
        "--out",
        str(run),
        "--no-pretrained",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = _log(run)
    # One record per stage and epoch (rank 0 writes), each from a 2-process run.
    assert [r["stage"] for r in records] == ["expert_a", "expert_b", "gate"]
    assert all(r["world_size"] == 2 for r in records)
    model, _ = load_checkpoint(run / "model.pt")
    for slot, name in zip(model.experts, ("a", "b")):
        saved = torch.load(run / f"expert_{name}.pt", weights_only=True)
        assert all(torch.equal(v, saved[k]) for k, v in slot.state_dict().items())


def test_load_frames_for_each_layout(tmp_path: Path) -> None:
    from moe_perception.data.a2d2 import A2D2_CATEGORIES
    from moe_perception.training.config import DataConfig, Subset

    sys.path.insert(0, str(REPO / "test" / "data"))
    try:
        from test_datasets import make_a2d2, make_cityscapes
    finally:
        sys.path.pop(0)
    a2d2 = make_a2d2(tmp_path / "a2d2", frames=2)
    data = DataConfig(dataset="a2d2", root=str(a2d2), cache_size=(16, 32))
    frames = trainer.load_frames(a2d2, Subset(splits=("all",), fraction=(0, 0.5)), data)
    assert frames.images.shape == (2, 3, 16, 32) and frames.images.dtype == torch.uint8
    assert trainer.as_float(frames.images).max() <= 1.0
    assert set(frames.labels.unique().tolist()) <= set(range(38)) | {255}
    names, colors = trainer.dataset_classes(data)
    assert names == A2D2_CATEGORIES and colors[0] in {
        (255, 0, 0),
        (200, 0, 0),
        (150, 0, 0),
        (128, 0, 0),
    }
    cityscapes = make_cityscapes(tmp_path / "cs")
    data = DataConfig(dataset="cityscapes", root=str(cityscapes))
    frames = trainer.load_frames(cityscapes, Subset(splits=("val",)), data)
    assert frames.images.shape == (2, 3, 32, 64) and frames.images.dtype == torch.float32
    assert len(trainer.dataset_classes(data)[0]) == 19


@pytest.mark.slow
def test_study_command_trains_then_evaluates(tiny_camvid: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_camvid, tmp_path / "study.yaml")
    with config.open("a") as stream:
        stream.write(
            "evaluation:\n"
            "  validation: {splits: [val]}\n"
            "  test: {splits: [test], sequences: [Seq05VD]}\n"
            "  ood: {dusk: {splits: [test], sequences: [0001TP]}}\n"
            "  models: [moe, ensemble]\n"
            "  bootstrap: 5\n"
            "  examples: 0\n"
        )
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    code = main(["study", str(config), "--runs", str(runs), "--reports", str(reports), "--quiet"])
    assert code == 0
    assert (runs / "tiny" / "model.pt").is_file()
    results = json.loads((reports / "tiny" / "results.json").read_text())
    assert list(results["conditions"]) == ["validation", "test", "dusk"]
    assert "ood" in results["conditions"]["dusk"]["views"]["moe"]
    # A second call finds the trained model and only evaluates.
    log_lines = (runs / "tiny" / "log.jsonl").read_text()
    code = main(
        [
            "study",
            str(config),
            "--runs",
            str(runs),
            "--reports",
            str(reports),
            "--quiet",
            "--skip-training",
        ]
    )
    assert code == 0 and (runs / "tiny" / "log.jsonl").read_text() == log_lines
