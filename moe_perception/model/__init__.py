"""Models: DeepLabv3+ experts, gates, the mixture and its baselines."""

from moe_perception.model.experts import DEFAULT_ENCODER, Expert, load_encoder_weights
from moe_perception.model.factory import MODEL_KINDS, ArchConfig, ModelKind, build_model
from moe_perception.model.gates import GATE_KINDS, Gate, GateKind
from moe_perception.model.mixture import (
    Ensemble,
    MCDropout,
    MixtureOfExperts,
    ModelOutput,
    SingleExpert,
    bilinear_taps,
    upsample,
)

__all__ = [
    "DEFAULT_ENCODER",
    "GATE_KINDS",
    "MODEL_KINDS",
    "ArchConfig",
    "Ensemble",
    "Expert",
    "Gate",
    "GateKind",
    "MCDropout",
    "MixtureOfExperts",
    "ModelKind",
    "ModelOutput",
    "SingleExpert",
    "bilinear_taps",
    "build_model",
    "load_encoder_weights",
    "upsample",
]
