"""Gating networks: they read the experts' decoder features and weight the experts."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

GateKind = Literal["simple", "classwise", "spatial"]
GATE_KINDS: tuple[GateKind, ...] = ("simple", "classwise", "spatial")


class Gate(nn.Module):
    """Softmax gate over K experts.

    ``simple`` gives one weight vector per image (as in the paper), ``classwise`` one per
    class per image, ``spatial`` one per pixel (a routing-uncertainty map).

    Args:
        kind: which gate.
        num_experts: K.
        num_classes: C (used by the classwise gate).
        in_channels: channels of the concatenated expert features.
        hidden_channels: width of the gate's convolutions.
        bottleneck: squeeze the features with a 1x1 convolution before the 3x3 one. The
            3x3 convolution straight over K x 256 channels costs as much as a third of a
            K = 2 MoE's forward; the bottleneck cuts the gate's cost by about four.

    Shape:
        - Input: (B, in_channels, h, w), the experts' features concatenated.
        - Output: simple (B, K, 1, 1); classwise (B, K, C, 1, 1); spatial (B, K, h, w);
          non-negative and summing to 1 over K.
    """

    def __init__(
        self,
        kind: GateKind,
        num_experts: int,
        num_classes: int,
        in_channels: int,
        hidden_channels: int = 64,
        bottleneck: bool = True,
    ) -> None:
        super().__init__()
        if kind not in GATE_KINDS:
            raise ValueError(f"unknown gate kind {kind!r}; choose one of {GATE_KINDS}")
        self.kind = kind
        self.num_experts = num_experts
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        if bottleneck:
            layers += _conv_bn_relu(in_channels, hidden_channels, 1)
            in_channels = hidden_channels
        layers += _conv_bn_relu(in_channels, hidden_channels, 3)
        self.reduce = nn.Sequential(*layers)
        outputs = {"simple": num_experts, "classwise": num_experts * num_classes}
        if kind == "spatial":
            self.out: nn.Module = nn.Conv2d(hidden_channels, num_experts, 1)
        else:
            self.out = nn.Linear(hidden_channels, outputs[kind])

    def forward(self, features: Tensor) -> Tensor:
        hidden = self.reduce(features)
        if self.kind == "spatial":
            return self.out(hidden).softmax(dim=1)
        scores = self.out(hidden.mean(dim=(2, 3)))
        if self.kind == "simple":
            return scores.softmax(dim=1)[:, :, None, None]
        scores = scores.view(-1, self.num_experts, self.num_classes)
        return scores.softmax(dim=1)[:, :, :, None, None]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
