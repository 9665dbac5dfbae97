"""Training and study YAML configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from moe_perception.training.config import EvalConfig, Subset, load_train_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def test_default_config_still_loads() -> None:
    config = load_train_config(CONFIG_DIR / "camvid_default.yaml")
    assert config.model.num_experts == 2 and config.evaluation is None
    assert config.experts[1].init_from == "daylight"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("study_*.yaml")), ids=lambda p: p.name)
def test_study_configs_load(path: Path) -> None:
    config = load_train_config(path)
    assert config.evaluation is not None
    assert config.evaluation.validation is not None


def test_evaluation_section_and_fraction(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        """
name: x
model: {kind: single, num_experts: 1}
experts:
  - {name: all, subset: {splits: [train], fraction: [0, 0.8]}, epochs: 1}
evaluation:
  validation: {splits: [train], fraction: [0.8, 1.0]}
  ood: {dusk: {splits: [test], sequences: [0001TP]}}
  corruptions: [fog, jpeg]
  severities: [1, 5]
  models: [single, mc_dropout]
"""
    )
    config = load_train_config(path)
    assert config.experts[0].subset.fraction == (0.0, 0.8)
    evaluation = config.evaluation
    assert evaluation.validation == Subset(splits=("train",), fraction=(0.8, 1.0))
    assert evaluation.ood == (("dusk", Subset(splits=("test",), sequences=("0001TP",))),)
    assert evaluation.corruptions == ("fog", "jpeg") and evaluation.severities == (1, 5)
    assert Subset(("test",), ("0001TP",), fraction=(0.5, 1.0)).describe() == "test:0001TP@0.5-1"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nmodel: {kind: single, num_experts: 1}\n", "missing required key 'experts'"),
        (
            "name: x\nmodel: {kind: single, num_experts: 1}\nexperts: []\nbogus: 1\n",
            "unknown keys",
        ),
        (
            "name: x\nmodel: {kind: single, num_experts: 1}\n"
            "experts: [{name: a, subset: {fraction: [0.9, 0.1]}, epochs: 1}]\n",
            "fraction",
        ),
        (
            "name: x\nmodel: {kind: single, num_experts: 1}\n"
            "experts: [{name: a, subset: {}, epochs: 1}]\nevaluation: {corruptions: [snow]}\n",
            "unknown corruptions",
        ),
        (
            "name: x\ndata: {dataset: kitti}\nmodel: {kind: single, num_experts: 1}\n"
            "experts: [{name: a, subset: {}, epochs: 1}]\n",
            "unknown dataset",
        ),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_train_config(path)


def test_eval_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="temperature"):
        EvalConfig(temperature="always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="severities"):
        EvalConfig(severities=(0, 6))
