"""Writing an evaluation to disk: ``results.json``, ``results.md`` and PNG plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moe_perception.training.evaluate import EVAL_MAPS, Example

SHORT = {
    "predictive_entropy": "PE",
    "mutual_information": "MI",
    "expert_variance": "EV",
    "gate_entropy": "GE",
    "max_softmax": "MSP",
}


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.{digits}f}"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _ci(values: list[float | None] | None, scale: float = 100, digits: int = 1) -> str:
    if not values or values[0] is None or values[1] is None:
        return ""
    return f" [{scale * values[0]:.{digits}f}, {scale * values[1]:.{digits}f}]"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _main_table(views: dict[str, Any]) -> list[str]:
    lines = [
        "| view | mIoU | ECE | MCE | Brier | NLL | AUROC PE | FPR95 PE | PAvPU PE "
        "| p(a\\|c) PE | p(u\\|i) PE |",
        "|---" * 11 + "|",
    ]
    for view, s in views.items():
        pe = s["maps"]["predictive_entropy"]
        lines.append(
            f"| {view} | {_pct(s['miou'])}{_ci(s['miou_ci'])} | "
            f"{_pct(s['ece'], 2)}{_ci(s['ece_ci'], digits=2)} | {_pct(s['mce'], 1)} | "
            f"{_num(s['brier'], 4)} | {_num(s['nll'], 4)} | "
            f"{_pct(pe['auroc'])}{_ci(pe['auroc_ci'])} | {_pct(pe['fpr95'])} | "
            f"{_pct(pe.get('pavpu'))} | {_pct(pe.get('p_accurate_certain'))} | "
            f"{_pct(pe.get('p_uncertain_inaccurate'))} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """A readable summary: one table per condition, then per-map tables."""
    lines = [
        f"# Evaluation of `{results['checkpoint']}`",
        "",
        f"Model {results['model']} ({results['encoder']}), experts "
        f"{', '.join(results['expert_names'])}; dataset {results['dataset']}. "
        f"Temperature mode `{results['temperature_mode']}`: "
        + ", ".join(f"{v} T={t:.3f}" for v, t in results["temperatures"].items())
        + ".",
        "",
        "Percentages; [95% bootstrap interval over images] where computed "
        f"({results['settings']['bootstrap']} resamples). ECE/MCE: 15 equal bins. AUROC and "
        "FPR@95%TPR: misclassification detection from "
        f"{results['settings']['uncertainty_bins']}-bin histograms (tie bound in the JSON). "
        "PAvPU, p(a|c), p(u|i) at the threshold chosen on validation (max PAvPU). "
        "PE predictive entropy, MI mutual information, EV expert variance, GE gate "
        "entropy, MSP 1 - max softmax.",
        "",
    ]
    if results.get("temperature_fit"):
        lines += ["| view | T fitted | NLL at T=1 | NLL at T |", "|---|---|---|---|"]
        for view, fit in results["temperature_fit"].items():
            lines.append(
                f"| {view} | {fit['temperature']:.3f} | {fit['nll_before']:.4f} | "
                f"{fit['nll_after']:.4f} |"
            )
        lines.append("")
    for name, condition in results["conditions"].items():
        title = f"## {name} ({condition['role']}: {condition['subset']}"
        if condition["corruption"]:
            title += f", {condition['corruption']} severity {condition['severity']}"
        first = next(iter(condition["views"].values()))
        lines += [title + f", {first['frames']} frames)", ""]
        lines += _main_table(condition["views"])
        for sequence, views in condition.get("by_sequence", {}).items():
            frames = next(iter(views.values()))["frames"]
            lines += ["", f"Sequence {sequence} ({frames} frames):", ""]
            lines += _main_table(views)
        lines.append("")
        lines += [
            "Misclassification AUROC by map:",
            "",
            "| view | " + " | ".join(SHORT[m] for m in EVAL_MAPS) + " |",
            "|---" * (len(EVAL_MAPS) + 1) + "|",
        ]
        for view, s in condition["views"].items():
            cells = " | ".join(_pct(s["maps"][m]["auroc"]) for m in EVAL_MAPS)
            lines.append(f"| {view} | {cells} |")
        lines.append("")
        if any("uncalibrated" in s for s in condition["views"].values()):
            lines += ["At T = 1 (before temperature scaling):", ""]
            lines += ["| view | ECE | MCE | Brier | NLL |", "|---|---|---|---|---|"]
            for view, s in condition["views"].items():
                raw = s.get("uncalibrated")
                if raw:
                    lines.append(
                        f"| {view} | {_pct(raw['ece'], 2)} | {_pct(raw['mce'])} | "
                        f"{_num(raw['brier'], 4)} | {_num(raw['nll'], 4)} |"
                    )
            lines.append("")
        if any("ood" in s for s in condition["views"].values()):
            lines += [
                "OOD detection against the test condition, AUROC frames / pixels:",
                "",
                "| view | " + " | ".join(SHORT[m] for m in EVAL_MAPS) + " |",
                "|---" * (len(EVAL_MAPS) + 1) + "|",
            ]
            for view, s in condition["views"].items():
                if "ood" in s:
                    ood = s["ood"]
                    cells = " | ".join(
                        f"{_pct(ood[m]['frames_auroc'])} / {_pct(ood[m]['pixels_auroc'])}"
                        for m in EVAL_MAPS
                    )
                    lines.append(f"| {view} | {cells} |")
            lines.append("")
        routing = {v: s["routing"] for v, s in condition["views"].items() if "routing" in s}
        if routing:
            lines += [
                "Routing uncertainty: AUROC of gate entropy for 'the gate's favourite expert "
                "is not the best one' (best: highest p of the true class per pixel; lowest "
                "NLL per image):",
                "",
                "| view | pixel AUROC | wrong-favourite pixels | image AUROC | "
                "wrong-favourite images |",
                "|---|---|---|---|---|",
            ]
            for view, r in routing.items():
                lines.append(
                    f"| {view} | {_pct(r.get('pixel_auroc'))} | "
                    f"{_pct(r.get('pixel_wrong_favourite_rate'))} | {_pct(r['image_auroc'])} | "
                    f"{_pct(r['image_wrong_favourite_rate'])} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


def write_report(
    results: dict[str, Any],
    examples: Sequence[Example],
    out_dir: str | Path,
    class_colors: Sequence[Sequence[int]],
) -> list[Path]:
    """Write ``results.json``, ``metrics.json``, ``results.md``, ``plots/*.png`` and
    ``examples/*.png``.

    ``metrics.json`` is ``results.json`` without the per-threshold curves, compact: a
    tenth of the size, enough for ``summarize`` and small enough to commit.

    Returns:
        The written files.
    """
    from moe_perception.training.plots import (
        Series,
        frame_panel,
        hstack,
        line_chart,
        reliability_diagram,
    )

    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    written = []
    path = out / "results.json"
    path.write_text(json.dumps(clean_json(results), indent=1, allow_nan=False) + "\n")
    written.append(path)
    path = out / "metrics.json"
    compact = json.dumps(clean_json(without_curves(results)), separators=(",", ":"))
    path.write_text(compact + "\n")
    written.append(path)
    path = out / "results.md"
    path.write_text(markdown(results))
    written.append(path)
    for name, condition in results["conditions"].items():
        diagrams = []
        for view, s in condition["views"].items():
            r = s["reliability"]
            diagrams.append(
                reliability_diagram(
                    r["accuracy"],
                    r["confidence"],
                    r["share"],
                    f"{view}: ECE {_pct(s['ece'], 2)}%",
                )
            )
        path = out / "plots" / f"reliability_{_safe(name)}.png"
        hstack(diagrams).save(path)
        written.append(path)
        for view, s in condition["views"].items():
            charts = []
            for key, label in (
                ("p_accurate_certain", "p(accurate | certain)"),
                ("p_uncertain_inaccurate", "p(uncertain | inaccurate)"),
                ("pavpu", "PAvPU"),
            ):
                series = [
                    Series(
                        SHORT[m], s["maps"][m]["curves"]["threshold"], s["maps"][m]["curves"][key]
                    )
                    for m in EVAL_MAPS
                ]
                charts.append(line_chart(series, f"{view} {name}: {label}", "threshold", ""))
            path = out / "plots" / f"conditional_{_safe(name)}_{_safe(view)}.png"
            hstack(charts).save(path)
            written.append(path)
    if examples:
        (out / "examples").mkdir(exist_ok=True)
        for example in examples:
            panel = frame_panel(
                example.image,
                example.label,
                example.predicted,
                example.maps,
                class_colors,
                f"{example.condition}: {example.name} ({results['views'][0]})",
            )
            path = out / "examples" / f"{_safe(example.condition)}_{_safe(example.name)}.png"
            panel.save(path)
            written.append(path)
    return written


def without_curves(value: Any) -> Any:
    """A copy of results without the per-threshold ``curves`` (the bulk of the JSON)."""
    if isinstance(value, dict):
        return {k: without_curves(v) for k, v in value.items() if k != "curves"}
    if isinstance(value, list):
        return [without_curves(v) for v in value]
    return value


def clean_json(value: Any) -> Any:
    """NaN and infinities become ``None`` (JSON null), recursively; tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def study_summary(results: Sequence[dict[str, Any]]) -> str:
    """Markdown comparing evaluation runs along the paper's three claims.

    Args:
        results: ``results.json`` contents of several runs (e.g. the study configs).
    """
    lines = ["# Study summary", ""]
    lines += [
        "In-distribution test (predictive entropy for the uncertainty columns):",
        "",
        "| run | view | mIoU | ECE | NLL | AUROC PE | PAvPU PE |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        test = next((c for c in r["conditions"].values() if c["role"] == "test"), None)
        if test is None:
            continue
        for view, s in test["views"].items():
            pe = s["maps"]["predictive_entropy"]
            lines.append(
                f"| {r.get('run', r['model'])} | {view} | {_pct(s['miou'])} | "
                f"{_pct(s['ece'], 2)} | {_num(s['nll'])} | {_pct(pe['auroc'])} | "
                f"{_pct(pe.get('pavpu'))} |"
            )
    lines += [
        "",
        "Claim 1, MoE against the ensemble of the same experts under OOD: mean over the OOD "
        "conditions of PAvPU, p(accurate|certain) and p(uncertain|inaccurate) (predictive "
        "entropy, thresholds from validation), and on how many conditions the MoE's PAvPU is "
        "higher:",
        "",
        "| run | PAvPU moe / ens | p(a\\|c) moe / ens | p(u\\|i) moe / ens | MoE higher PAvPU |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        ood = [c for c in r["conditions"].values() if c["role"] == "ood"]
        if not ood or "moe" not in ood[0]["views"] or "ensemble" not in ood[0]["views"]:
            continue
        cells = []
        for key in ("pavpu", "p_accurate_certain", "p_uncertain_inaccurate"):
            moe = _mean([c["views"]["moe"]["maps"]["predictive_entropy"].get(key) for c in ood])
            ens = _mean(
                [c["views"]["ensemble"]["maps"]["predictive_entropy"].get(key) for c in ood]
            )
            cells.append(f"{_pct(moe)} / {_pct(ens)}")
        wins = sum(
            (c["views"]["moe"]["maps"]["predictive_entropy"].get("pavpu") or 0)
            > (c["views"]["ensemble"]["maps"]["predictive_entropy"].get("pavpu") or 0)
            for c in ood
        )
        lines.append(
            f"| {r.get('run', r['model'])} | {' | '.join(cells)} | {wins} of {len(ood)} |"
        )
    lines += [
        "",
        "Claim 1 on the uncorrupted OOD subsets, one row each (predictive entropy):",
        "",
        "| run | subset | mIoU moe / ens | AUROC moe / ens | PAvPU moe / ens | "
        "p(a\\|c) moe / ens | p(u\\|i) moe / ens |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, c in r["conditions"].items():
            views = c["views"]
            if c["role"] != "ood" or c.get("corruption") or not {"moe", "ensemble"} <= set(views):
                continue
            moe, ens = views["moe"], views["ensemble"]
            cells = [f"{_pct(moe['miou'])} / {_pct(ens['miou'])}"]
            for key in ("auroc", "pavpu", "p_accurate_certain", "p_uncertain_inaccurate"):
                a = moe["maps"]["predictive_entropy"].get(key)
                b = ens["maps"]["predictive_entropy"].get(key)
                cells.append(f"{_pct(a)} / {_pct(b)}")
            lines.append(f"| {r.get('run', r['model'])} | {name} | {' | '.join(cells)} |")
    lines += [
        "",
        "Claim 2, routing uncertainty by gate: AUROC of gate entropy for 'the favourite "
        "expert is not the best one', test / mean over OOD:",
        "",
        "| run | pixel AUROC | image AUROC |",
        "|---|---|---|",
    ]
    for r in results:
        conditions = list(r["conditions"].values())
        test = [c for c in conditions if c["role"] == "test"]
        ood = [c for c in conditions if c["role"] == "ood"]
        if not test or "routing" not in test[0]["views"].get("moe", {}):
            continue
        cells = []
        for key in ("pixel_auroc", "image_auroc"):
            here = test[0]["views"]["moe"]["routing"].get(key)
            there = _mean([c["views"]["moe"].get("routing", {}).get(key) for c in ood])
            cells.append(f"{_pct(here)} / {_pct(there)}")
        lines.append(f"| {r.get('run', r['model'])} | {' | '.join(cells)} |")
    lines += [
        "",
        "Claim 3, calibration against the number of experts (MoE view): ECE and NLL on the "
        "test / mean over OOD:",
        "",
        "| run | K | ECE test | ECE OOD | NLL test | NLL OOD |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        conditions = list(r["conditions"].values())
        test = [c for c in conditions if c["role"] == "test"]
        ood = [c for c in conditions if c["role"] == "ood"]
        if not test or "moe" not in test[0]["views"]:
            continue
        s = test[0]["views"]["moe"]
        lines.append(
            f"| {r.get('run', r['model'])} | {len(r['expert_names'])} | {_pct(s['ece'], 2)} | "
            f"{_pct(_mean([c['views']['moe']['ece'] for c in ood]), 2)} | {_num(s['nll'])} | "
            f"{_num(_mean([c['views']['moe']['nll'] for c in ood]))} |"
        )
    return "\n".join(lines) + "\n"
