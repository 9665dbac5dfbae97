"""The benchmark command on a tiny configuration: well-formed JSON, markdown and targets."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from moe_perception.benchmark.cli import register
from moe_perception.benchmark.runner import (
    BenchmarkConfig,
    evaluate_targets,
    format_markdown,
    network_size,
    variant_label,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moe-perception")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """``moe-perception benchmark`` at 64x48 with a few contenders, no ONNX."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    args = _parser().parse_args(
        [
            "benchmark",
            "--out",
            str(out),
            "--archs",
            "default",
            "--sizes",
            "64x48",
            "--variants",
            "single",
            "ensemble",
            "moe-simple",
            "moe-spatial",
            "mc-dropout",
            "--mc-samples",
            "2",
            "--repeats",
            "1",
            "--scaling-size",
            "64x48",
            "--scaling-experts",
            "2",
            "3",
            "--batches",
            "1",
            "2",
            "--skip",
            "channels-last",
            "onnxruntime",
            # One thread: on a busy machine two OpenMP threads can be 100x slower.
            "--threads",
            "1",
        ]
    )
    threads = torch.get_num_threads()
    assert args.handler(args) == 0
    assert torch.get_num_threads() == threads, "the run must restore torch's threads"
    return json.loads(out.read_text()), out.with_suffix(".md").read_text(), out


@pytest.mark.slow
def test_results_are_well_formed_json(tiny_run: tuple[dict[str, Any], str, Path]) -> None:
    results, _, out = tiny_run
    # Plain JSON all the way down (no NaN, no objects): it round-trips unchanged.
    assert json.loads(json.dumps(results, allow_nan=False)) == results
    assert results["machine"]["cpu_count"] >= 1 and results["machine"]["torch"]
    assert results["config"]["sizes"] == [[64, 48]]
    models = [row["model"] for row in results["forward"]]
    assert models == ["single", "ensemble-k2", "moe-simple-k2", "moe-spatial-k2", "mc-dropout-2"]
    for row in results["forward"]:
        assert row["input_hw"] == [48, 64]
        assert row["best_s"] > 0 and len(row["samples_s"]) >= 1
        assert row["flops"] > 0 and row["peak_bytes"] > 0
        assert math.isclose(row["flops_per_second"], row["flops"] / row["best_s"])
        assert math.isclose(
            row["matmul_fraction"], row["flops_per_second"] / row["matmul_flops_per_second"]
        )
    flops = {row["model"]: row["flops"] for row in results["forward"]}
    assert flops["ensemble-k2"] == 2 * flops["single"] < flops["moe-simple-k2"]
    assert flops["mc-dropout-2"] > flops["single"]  # the decoder runs twice


@pytest.mark.slow
def test_every_section_is_present(tiny_run: tuple[dict[str, Any], str, Path]) -> None:
    results, _, _ = tiny_run
    maps = results["maps"]
    assert [row["model"] for row in maps] == ["moe-simple-k2", "moe-spatial-k2"]
    for row in maps:
        assert math.isclose(row["share"], row["best_s"] / row["forward_best_s"])
    assert [row["num_experts"] for row in results["scaling_experts"]] == [2, 3]
    k2, k3 = results["scaling_experts"]
    assert k3["flops"] > k2["flops"] and k3["ensemble_flops"] > k2["ensemble_flops"]
    batches = results["scaling_batch"]
    assert [row["batch"] for row in batches] == [1, 2]
    assert batches[1]["flops"] == 2 * batches[0]["flops"]
    assert "speedups" not in results  # both skipped
    assert len(results["matmul"]) == 1 and results["matmul"][0]["flops_per_second"] > 0


@pytest.mark.slow
def test_targets_and_markdown(tiny_run: tuple[dict[str, Any], str, Path]) -> None:
    results, markdown, _ = tiny_run
    names = {t["target"] for t in results["targets"]}
    assert names == {"all maps / MoE forward", "MoE K=2 / ensemble of its experts"}
    for target in results["targets"]:
        assert target["met"] == (target["value"] <= target["limit"])
    for heading in ("## Forward pass", "## All uncertainty maps", "## Scaling with K"):
        assert heading in markdown
    for model in ("moe-simple-k2", "ensemble-k2", "mc-dropout-2"):
        assert f"| {model} |" in markdown
    assert format_markdown(results) == markdown


def test_targets_from_handmade_results() -> None:
    def row(model: str, best: float, variant: str, fraction: float = 0.6) -> dict[str, Any]:
        return {
            "arch": "default",
            "size": "640x480",
            "model": model,
            "variant": variant,
            "best_s": best,
            "matmul_fraction": fraction,
        }

    results = {
        "forward": [
            row("ensemble-k2", 1.0, "ensemble"),
            row("moe-simple-k2", 1.2, "moe-simple", fraction=0.4),
        ],
        "maps": [{"arch": "default", "size": "640x480", "model": "moe-simple-k2", "share": 0.02}],
        "node": {
            "bare": {
                "segmenter_ms": {"median": 100.0},
                "segmenter_and_render_ms": {"median": 104.0},
            },
            "node_end_to_end_ms": {"median": 105.0},
        },
    }
    targets = {t["target"]: t for t in evaluate_targets(results)}
    assert targets["all maps / MoE forward"]["met"] is True
    moe = targets["MoE K=2 / ensemble of its experts"]
    assert moe["value"] == pytest.approx(1.2) and moe["met"] is False
    assert targets["MoE forward FLOP/s / matmul FLOP/s"]["met"] is False
    node = targets["node end-to-end / (bare inference + maps)"]
    assert node["value"] == pytest.approx(1.05) and node["met"] is True
    assert "| end_to_end_ratio | 1.05 |" in format_markdown({"node": results["node"]})
    # Rounds pairing a bare call with a node round trip take precedence.
    results["node"]["paired"] = {"segmenter_ms": {"median": 90.0}}
    node = {t["target"]: t for t in evaluate_targets(results)}[
        "node end-to-end / (bare inference + maps)"
    ]
    assert node["value"] == pytest.approx(105.0 / 90.0) and node["met"] is False
    results["node"] = {"note": "no ratio here"}
    node = {t["target"]: t for t in evaluate_targets(results)}[
        "node end-to-end / (bare inference + maps)"
    ]
    assert node["value"] is None and node["met"] is None


def test_sizes_are_padded_to_multiples_of_16() -> None:
    assert network_size((480, 360)) == (368, 480)
    assert network_size((640, 480)) == (480, 640)
    assert network_size((1920, 1208)) == (1216, 1920)


def test_labels_and_config_checks() -> None:
    assert variant_label("moe-classwise", 3, 10) == "moe-classwise-k3"
    assert variant_label("mc-dropout", 2, 10) == "mc-dropout-10"
    assert variant_label("single", 2, 10) == "single"
    with pytest.raises(ValueError, match="unknown architecture"):
        BenchmarkConfig(archs=("vgg",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 experts"):
        BenchmarkConfig(scaling_experts=(1,))
    with pytest.raises(ValueError, match="below 16"):
        BenchmarkConfig(sizes=((8, 8),))


def test_bad_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["benchmark", "--sizes", "640by480"])
    assert exit_info.value.code == 2
    assert "expected WIDTHxHEIGHT" in capsys.readouterr().err
