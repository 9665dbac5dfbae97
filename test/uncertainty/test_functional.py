"""Exact values and properties of the uncertainty maps."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_perception.model import ModelOutput, upsample
from moe_perception.uncertainty import (
    expert_variance,
    gate_entropy,
    max_softmax_uncertainty,
    mixture_probs,
    mutual_information,
    predictive_entropy,
    uncertainty_maps,
)


def _opposite_experts() -> tuple[torch.Tensor, torch.Tensor]:
    """Two experts, two classes, each certain of a different class; equal weights."""
    probs = torch.zeros(1, 2, 2, 3, 4)
    probs[:, 0, 0] = 1.0
    probs[:, 1, 1] = 1.0
    return probs, torch.full((1, 2, 1, 1), 0.5)


def test_opposite_experts_are_maximally_uncertain() -> None:
    probs, weights = _opposite_experts()
    mixture = mixture_probs(probs, weights)
    ones = torch.ones(1, 3, 4)
    torch.testing.assert_close(predictive_entropy(mixture), ones)
    torch.testing.assert_close(mutual_information(probs, weights), ones)
    torch.testing.assert_close(expert_variance(probs, weights), ones)
    torch.testing.assert_close(gate_entropy(weights), torch.ones(1, 1, 1))
    torch.testing.assert_close(max_softmax_uncertainty(mixture), ones * 0.5)


def test_mutual_information_of_opposite_experts_is_ln2_unnormalised() -> None:
    # With C = 4 classes the normalised value is ln 2 / ln 4 = 1/2 exactly.
    probs = torch.zeros(1, 2, 4, 1, 1)
    probs[:, 0, 0] = 1.0
    probs[:, 1, 1] = 1.0
    weights = torch.full((1, 2, 1, 1), 0.5)
    value = mutual_information(probs, weights)
    torch.testing.assert_close(value * math.log(4), torch.full((1, 1, 1), math.log(2)))


def test_agreeing_experts_have_no_disagreement() -> None:
    same = torch.tensor([0.7, 0.2, 0.1])[None, None, :, None, None].expand(2, 3, 3, 4, 5)
    weights = torch.tensor([0.2, 0.3, 0.5])[None, :, None, None].expand(2, 3, 4, 5)
    torch.testing.assert_close(mutual_information(same, weights), torch.zeros(2, 4, 5))
    torch.testing.assert_close(expert_variance(same, weights), torch.zeros(2, 4, 5))
    expected = -(torch.tensor([0.7, 0.2, 0.1]).log() * torch.tensor([0.7, 0.2, 0.1])).sum()
    torch.testing.assert_close(
        predictive_entropy(mixture_probs(same, weights)),
        torch.full((2, 4, 5), float(expected / math.log(3))),
    )


def test_gate_entropy_values() -> None:
    uniform = torch.full((1, 4, 2, 2), 0.25)
    torch.testing.assert_close(gate_entropy(uniform), torch.ones(1, 2, 2))
    one_hot = torch.zeros(1, 3, 2, 2)
    one_hot[:, 1] = 1.0
    torch.testing.assert_close(gate_entropy(one_hot), torch.zeros(1, 2, 2))
    assert gate_entropy(torch.ones(2, 1, 3, 3)).shape == (2, 3, 3)
    assert gate_entropy(torch.ones(2, 1, 3, 3)).abs().sum() == 0


def _random_case(seed: int, k: int, c: int, spatial: bool):
    generator = torch.Generator().manual_seed(seed)
    # Sharp and flat logits alike: scale spans near-one-hot to near-uniform.
    scale = torch.rand(1, generator=generator) * 20
    logits = torch.randn(2, k, c, 3, 4, generator=generator) * scale
    shape = (2, k, 3, 4) if spatial else (2, k, 1, 1)
    weights = (torch.randn(shape, generator=generator) * 3).softmax(dim=1)
    return logits, weights


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(2, 5),
    c=st.integers(2, 8),
    spatial=st.booleans(),
)
def test_maps_are_bounded_and_ordered(seed: int, k: int, c: int, spatial: bool) -> None:
    logits, weights = _random_case(seed, k, c, spatial)
    probs = logits.softmax(dim=2)
    mixture = mixture_probs(probs, weights)
    pe = predictive_entropy(mixture)
    mi = mutual_information(probs, weights)
    for value in (
        pe,
        mi,
        expert_variance(probs, weights),
        gate_entropy(weights),
        max_softmax_uncertainty(mixture),
    ):
        assert value.min() >= 0.0 and value.max() <= 1.0
    # MI = H(p) - E_w[H(p_k)] <= H(p): disagreement never exceeds total uncertainty.
    assert (mi <= pe + 1e-6).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 5), spatial=st.booleans())
def test_permuting_experts_with_their_weights_changes_nothing(
    seed: int, k: int, spatial: bool
) -> None:
    logits, weights = _random_case(seed, k, 6, spatial)
    probs = logits.softmax(dim=2)
    order = torch.randperm(k, generator=torch.Generator().manual_seed(seed))
    for function in (mutual_information, expert_variance):
        torch.testing.assert_close(
            function(probs, weights), function(probs[:, order], weights[:, order])
        )
    torch.testing.assert_close(gate_entropy(weights), gate_entropy(weights[:, order]))


@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_one_pass_equals_the_pure_functions(spatial: bool, temperature: float) -> None:
    logits, weights = _random_case(3, 3, 7, spatial)
    output = ModelOutput(logits=logits.mean(dim=1), expert_logits=logits, gate_weights=weights)
    maps = uncertainty_maps(output, temperature)
    probs = (logits / temperature).softmax(dim=2)
    mixture = mixture_probs(probs, weights)
    torch.testing.assert_close(maps.probs, mixture)
    torch.testing.assert_close(maps.predictive_entropy, predictive_entropy(mixture))
    torch.testing.assert_close(maps.mutual_information, mutual_information(probs, weights))
    torch.testing.assert_close(maps.expert_variance, expert_variance(probs, weights))
    torch.testing.assert_close(maps.gate_entropy, gate_entropy(weights).expand(2, 3, 4))
    torch.testing.assert_close(maps.max_softmax, max_softmax_uncertainty(mixture))
    torch.testing.assert_close(maps.image_gate_entropy, maps.gate_entropy.mean(dim=(1, 2)))
    assert set(maps.as_dict()) == {
        "predictive_entropy",
        "mutual_information",
        "expert_variance",
        "gate_entropy",
    }


def test_reference_implementation_on_one_pixel() -> None:
    # Written out by hand for K = 2, C = 3 to pin the formulas down.
    p1, p2 = [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]
    w1, w2 = 0.25, 0.75
    mixture = [w1 * a + w2 * b for a, b in zip(p1, p2)]

    def entropy(p: list[float]) -> float:
        return -sum(x * math.log(x) for x in p)

    expected_mi = (entropy(mixture) - w1 * entropy(p1) - w2 * entropy(p2)) / math.log(3)
    top = max(range(3), key=lambda i: mixture[i])
    expected_ev = (w1 * (p1[top] - mixture[top]) ** 2 + w2 * (p2[top] - mixture[top]) ** 2) / 0.25
    probs = torch.tensor([p1, p2], dtype=torch.float64)[None, :, :, None, None]
    weights = torch.tensor([w1, w2], dtype=torch.float64)[None, :, None, None]
    assert mutual_information(probs, weights).item() == pytest.approx(expected_mi, abs=1e-12)
    assert expert_variance(probs, weights).item() == pytest.approx(expected_ev, abs=1e-12)
    expected_ge = -(w1 * math.log(w1) + w2 * math.log(w2)) / math.log(2)
    assert gate_entropy(weights).item() == pytest.approx(expected_ge, abs=1e-12)


@pytest.mark.parametrize("spatial", [False, True])
def test_one_pass_in_blocks_equals_the_pure_functions(spatial: bool) -> None:
    # 150 x 250 pixels span several blocks of the CPU path; the corners hold exact ties
    # (uniform logits) and probabilities that underflow to 0.
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 7, 150, 250, generator=generator) * 6
    logits[0, :, :, :4, :4] = 0.0
    logits[1, 0, 2, :4, :4] = 200.0
    shape = (2, 3, 150, 250) if spatial else (2, 3, 1, 1)
    weights = (torch.randn(shape, generator=generator) * 3).softmax(dim=1)
    output = ModelOutput(logits=logits.mean(dim=1), expert_logits=logits, gate_weights=weights)
    maps = uncertainty_maps(output, 1.3)
    probs = (logits / 1.3).softmax(dim=2)
    mixture = mixture_probs(probs, weights)
    torch.testing.assert_close(maps.probs, mixture)
    torch.testing.assert_close(maps.predictive_entropy, predictive_entropy(mixture))
    torch.testing.assert_close(maps.mutual_information, mutual_information(probs, weights))
    torch.testing.assert_close(maps.expert_variance, expert_variance(probs, weights))
    torch.testing.assert_close(maps.gate_entropy, gate_entropy(weights).expand(2, 150, 250))
    torch.testing.assert_close(maps.max_softmax, max_softmax_uncertainty(mixture))


@pytest.mark.parametrize("spatial", [False, True])
def test_maps_are_computed_at_the_experts_resolution_then_upsampled(spatial: bool) -> None:
    logits, weights = _random_case(3, 3, 7, spatial)  # experts at 3 x 4
    size = (12, 16)
    output = ModelOutput(torch.zeros(2, 7, *size), logits, weights)
    maps = uncertainty_maps(output, 1.3)
    probs = (logits / 1.3).softmax(dim=2)
    mixture = mixture_probs(probs, weights)

    def up(plane: torch.Tensor) -> torch.Tensor:
        return upsample(plane.unsqueeze(1), size).squeeze(1)

    torch.testing.assert_close(maps.probs, upsample(mixture, size))
    torch.testing.assert_close(maps.probs.sum(dim=1), torch.ones(2, *size))
    torch.testing.assert_close(maps.predictive_entropy, up(predictive_entropy(mixture)))
    torch.testing.assert_close(maps.mutual_information, up(mutual_information(probs, weights)))
    torch.testing.assert_close(maps.expert_variance, up(expert_variance(probs, weights)))
    routing = up(gate_entropy(weights).expand(2, 3, 4))
    torch.testing.assert_close(maps.gate_entropy, routing)
    # max_softmax is read off the upsampled probabilities, so the two agree exactly.
    torch.testing.assert_close(maps.max_softmax, max_softmax_uncertainty(maps.probs))
    for name in ("probs", "predictive_entropy", "mutual_information", "expert_variance"):
        assert getattr(maps, name).is_contiguous(), name
    for name in ("predictive_entropy", "mutual_information", "expert_variance"):
        assert getattr(maps, name).shape == (2, *size)
