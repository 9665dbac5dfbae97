"""The study summary reads the claims off evaluation results."""

from __future__ import annotations

from moe_perception.training.report import study_summary


def _view(miou: float, pavpu: float, ece: float = 0.05) -> dict:
    entropy = {"auroc": 0.8, "pavpu": pavpu, "p_accurate_certain": 0.9}
    entropy["p_uncertain_inaccurate"] = 0.5
    return {"miou": miou, "ece": ece, "nll": 0.5, "maps": {"predictive_entropy": entropy}}


def _condition(role: str, moe: dict, ensemble: dict, corruption: str | None = None) -> dict:
    return {"role": role, "corruption": corruption, "views": {"moe": moe, "ensemble": ensemble}}


def test_summary_counts_ood_wins_and_lists_uncorrupted_ood_subsets() -> None:
    result = {
        "run": "k2",
        "model": "moe-simple-k2",
        "expert_names": ["a", "b"],
        "conditions": {
            "test": _condition("test", _view(0.6, 0.9), _view(0.55, 0.85)),
            "dusk": _condition("ood", _view(0.4, 0.7), _view(0.3, 0.75)),
            "fog-3": _condition("ood", _view(0.5, 0.8), _view(0.45, 0.6), "fog"),
        },
    }
    text = study_summary([result])
    assert "| k2 | moe | 60.0 | 5.00 |" in text
    assert "| 1 of 2 |" in text  # the MoE's PAvPU is higher under fog only
    assert "| k2 | dusk | 40.0 / 30.0 | 80.0 / 80.0 | 70.0 / 75.0 |" in text
    assert "| k2 | fog-3 |" not in text  # corrupted copies are only in the means
    assert "| k2 | 2 | 5.00 | 5.00 |" in text
