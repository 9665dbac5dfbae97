"""Shapes, weights and gradients of the mixture and its baselines."""

from __future__ import annotations

import pytest
import torch

from moe_perception.model import (
    GATE_KINDS,
    ArchConfig,
    Ensemble,
    MCDropout,
    MixtureOfExperts,
    ModelOutput,
    bilinear_taps,
    build_model,
    upsample,
)

B, C, H, W = 2, 5, 32, 48
h, w = H // 4, W // 4  # the decoder's resolution


def _images() -> torch.Tensor:
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, bool, int], torch.nn.Module]:
    torch.manual_seed(0)
    experts = list(
        build_model(ArchConfig(num_experts=4, num_classes=C, decoder_channels=32)).experts
    )
    return {
        (gate, conv, k): MixtureOfExperts(experts[:k], gate, conv).eval()
        for gate in GATE_KINDS
        for conv in (False, True)
        for k in (2, 3, 4)
    }


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("gate", GATE_KINDS)
def test_output_shapes_and_weights(models, gate: str, conv: bool, k: int) -> None:
    with torch.inference_mode():
        output = models[(gate, conv, k)](_images())
    assert isinstance(output, ModelOutput)
    assert output.logits.shape == (B, C, H, W)
    assert output.expert_logits.shape == (B, k, C, h, w)
    weights = output.gate_weights.expand(B, k, h, w)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(B, h, w))
    if gate == "simple":
        assert output.gate_weights.shape == (B, k, 1, 1)
    else:
        assert output.gate_weights.shape == (B, k, h, w)
    if gate == "classwise":
        assert output.class_gate_weights.shape == (B, k, C)
        # Each decoder pixel carries the weights of its predicted class there.
        fused = (output.class_gate_weights[:, :, :, None, None] * output.expert_logits).sum(1)
        if conv:
            fused = fused + models[(gate, conv, k)].refine(fused)
        predicted = fused.argmax(dim=1)
        for b, y, x in ((1, 5, 7), (0, 0, 0), (1, h - 1, w - 1)):
            expected = output.class_gate_weights[b, :, predicted[b, y, x]]
            torch.testing.assert_close(output.gate_weights[b, :, y, x], expected)
    else:
        assert output.class_gate_weights is None
    assert output.image_gate_weights.shape == (B, k)


@pytest.mark.parametrize("gate", GATE_KINDS)
def test_fused_logits_are_the_upsampled_gate_weighted_sum(models, gate: str) -> None:
    model = models[(gate, False, 2)]
    with torch.inference_mode():
        output = model(_images())
    if gate == "classwise":
        weights = output.class_gate_weights[:, :, :, None, None]
    else:
        weights = output.gate_weights.unsqueeze(2)
    fused = (weights * output.expert_logits).sum(dim=1)
    torch.testing.assert_close(output.logits, upsample(fused, (H, W)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("small", "large"),
    [
        ((8, 12), (32, 48)),
        ((60, 80), (360, 480)),
        ((5, 7), (23, 31)),
        ((10, 10), (7, 13)),
        ((4, 4), (4, 4)),
    ],
)
def test_bilinear_taps_reproduce_upsample(small, large) -> None:
    values = torch.randn(1, 1, *small, dtype=torch.float64)
    rows, cols = torch.meshgrid(torch.arange(large[0]), torch.arange(large[1]), indexing="ij")
    tap_rows, tap_cols, taps = bilinear_taps(small, large, rows.flatten(), cols.flatten())
    assert tap_rows.shape == taps.shape == (large[0] * large[1], 4)
    assert (taps >= 0).all()
    torch.testing.assert_close(taps.sum(dim=1), torch.ones(len(taps)))
    blended = (values[0, 0][tap_rows, tap_cols] * taps.double()).sum(dim=1)
    # The weights are float32: agreement to float32 rounding.
    torch.testing.assert_close(
        blended.view(large), upsample(values, large)[0, 0], rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("gate", GATE_KINDS)
def test_gradients_flow_to_the_gate(gate: str) -> None:
    torch.manual_seed(0)
    model = build_model(ArchConfig(num_classes=C, gate=gate, gate_conv=True, decoder_channels=32))
    model.train()
    output = model(_images())
    target = torch.randint(0, C, (B, H, W))
    torch.nn.functional.cross_entropy(output.logits, target).backward()
    for name, parameter in model.gate.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # The refinement starts as the identity but learns.
    assert model.refine.weight.grad.abs().sum() > 0


def test_mixture_needs_two_experts() -> None:
    with pytest.raises(ValueError, match="needs num_experts >= 2"):
        ArchConfig(kind="moe", num_experts=1)
    model = build_model(ArchConfig(num_classes=C, decoder_channels=32))
    with pytest.raises(ValueError, match="at least 2 experts"):
        MixtureOfExperts(list(model.experts)[:1])


def test_unknown_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown gate kind 'pixel'"):
        ArchConfig(gate="pixel")
    with pytest.raises(ValueError, match="unknown model kind"):
        ArchConfig(kind="forest")
    with pytest.raises(ValueError, match="no shipped weights"):
        build_model(ArchConfig(encoder="resnet18"), pretrained=True)


def test_ensemble_averages_the_same_experts(models) -> None:
    moe = models[("simple", False, 3)]
    ensemble = Ensemble(list(moe.experts)).eval()
    with torch.inference_mode():
        moe_out, ens_out = moe(_images()), ensemble(_images())
    torch.testing.assert_close(ens_out.expert_logits, moe_out.expert_logits)
    torch.testing.assert_close(ens_out.logits, upsample(moe_out.expert_logits.mean(dim=1), (H, W)))
    torch.testing.assert_close(ens_out.gate_weights, torch.full((B, 3, 1, 1), 1 / 3))


def test_single_expert_is_the_expert_alone(models) -> None:
    moe = models[("simple", False, 2)]
    single = build_model(
        ArchConfig(kind="single", num_experts=1, num_classes=C, decoder_channels=32)
    )
    single.experts[0].load_state_dict(moe.experts[1].state_dict())
    with torch.inference_mode():
        output = single.eval()(_images())
        reference = moe(_images()).expert_logits[:, 1]
    torch.testing.assert_close(output.logits, upsample(reference, (H, W)))
    assert output.expert_logits.shape == (B, 1, C, h, w)


def test_mc_dropout_samples_differ_and_batch_norm_stays_frozen(models) -> None:
    expert = models[("simple", False, 2)].experts[0]
    model = MCDropout(expert, samples=4).eval()
    stats = {k: v.clone() for k, v in expert.state_dict().items() if "running" in k}
    with torch.inference_mode():
        output = model(_images())
    assert output.logits.shape == (B, C, H, W)
    assert output.expert_logits.shape == (B, 4, C, h, w)
    assert not torch.allclose(output.expert_logits[:, 0], output.expert_logits[:, 1])
    for key, value in stats.items():
        assert torch.equal(expert.state_dict()[key], value), key
    # Dropout is switched back off afterwards: a plain expert pass is deterministic.
    assert not any(m.training for m in expert.modules())


def test_bottleneck_gate_is_cheaper_and_old_checkpoints_keep_the_full_gate() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from moe_perception.model.gates import Gate

    features = torch.randn(1, 512, 30, 40)
    flops = {}
    for bottleneck in (False, True):
        gate = Gate("simple", 2, 11, 512, bottleneck=bottleneck).eval()
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            weights = gate(features)
        flops[bottleneck] = counter.get_total_flops()
        assert weights.shape == (1, 2, 1, 1)
    # 3x3 over 512 channels vs 1x1 over 512 then 3x3 over 64: about a quarter
    assert flops[True] < 0.3 * flops[False]
    assert ArchConfig().gate_bottleneck
