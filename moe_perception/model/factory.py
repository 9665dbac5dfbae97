"""Architecture description and the plain factory that builds a model from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from torch import nn

from moe_perception.model.experts import DEFAULT_ENCODER, Expert, load_encoder_weights
from moe_perception.model.gates import GATE_KINDS, GateKind
from moe_perception.model.mixture import Ensemble, MCDropout, MixtureOfExperts, SingleExpert

ModelKind = Literal["moe", "ensemble", "single", "mc_dropout"]
MODEL_KINDS: tuple[ModelKind, ...] = ("moe", "ensemble", "single", "mc_dropout")


@dataclass(frozen=True)
class ArchConfig:
    """Everything needed to rebuild a model's modules (stored in every checkpoint).

    Attributes:
        kind: ``moe``, or a baseline with the same interface.
        encoder: segmentation-models-pytorch encoder name.
        num_experts: K (experts of an MoE or ensemble; 1 for single and MC dropout).
        num_classes: C.
        gate: gate kind of an MoE.
        gate_conv: ``+conv`` refinement of the fused logits.
        gate_bottleneck: the gate squeezes features with a 1x1 convolution before its 3x3
            one (``False``: the full 3x3 gate of checkpoints written before this option).
        decoder_channels: DeepLabv3+ decoder width.
        dropout: ASPP dropout probability.
        mc_samples: passes of MC dropout.
    """

    kind: ModelKind = "moe"
    encoder: str = DEFAULT_ENCODER
    num_experts: int = 2
    num_classes: int = 11
    gate: GateKind = "simple"
    gate_conv: bool = False
    gate_bottleneck: bool = True
    decoder_channels: int = 256
    dropout: float = 0.5
    mc_samples: int = 10

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; choose one of {MODEL_KINDS}")
        if self.gate not in GATE_KINDS:
            raise ValueError(f"unknown gate kind {self.gate!r}; choose one of {GATE_KINDS}")
        minimum = 2 if self.kind in ("moe", "ensemble") else 1
        if self.num_experts < minimum:
            raise ValueError(f"a {self.kind} model needs num_experts >= {minimum}")
        if self.kind in ("single", "mc_dropout") and self.num_experts != 1:
            raise ValueError(f"a {self.kind} model has exactly one expert")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    @property
    def name(self) -> str:
        """Short human name, e.g. ``moe-simple+conv-k2``."""
        if self.kind == "moe":
            return f"moe-{self.gate}{'+conv' if self.gate_conv else ''}-k{self.num_experts}"
        if self.kind == "ensemble":
            return f"ensemble-k{self.num_experts}"
        return "mc-dropout" if self.kind == "mc_dropout" else "single"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown architecture fields {unknown}")
        return cls(**data)


def build_model(arch: ArchConfig, pretrained: bool | str = False) -> nn.Module:
    """Build the modules described by ``arch``.

    Args:
        arch: the architecture.
        pretrained: ``True`` initialises every encoder from the shipped ImageNet weights
            (default encoder only); a path loads encoder weights from that file.

    Returns:
        A module whose ``forward(images)`` returns a :class:`ModelOutput` and whose
        ``experts`` attribute lists the experts.
    """
    experts = []
    for _ in range(arch.num_experts):
        expert = Expert(arch.encoder, arch.num_classes, arch.decoder_channels, arch.dropout)
        if pretrained:
            if pretrained is True and arch.encoder != DEFAULT_ENCODER:
                raise ValueError(
                    f"no shipped weights for encoder {arch.encoder!r}: pass a weights file"
                )
            load_encoder_weights(expert, None if pretrained is True else pretrained)
        experts.append(expert)
    if arch.kind == "moe":
        return MixtureOfExperts(
            experts, arch.gate, arch.gate_conv, gate_bottleneck=arch.gate_bottleneck
        )
    if arch.kind == "ensemble":
        return Ensemble(experts)
    if arch.kind == "single":
        return SingleExpert(experts[0])
    return MCDropout(experts[0], arch.mc_samples)
