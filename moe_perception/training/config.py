"""Training configuration: frozen dataclasses loaded from YAML (see ``config/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from moe_perception.data.datasets import DATASET_NAMES, DatasetName
from moe_perception.data.splits import check_fraction
from moe_perception.model import ArchConfig

TemperatureMode = Literal["fit", "checkpoint", "none"]
TEMPERATURE_MODES: tuple[TemperatureMode, ...] = ("fit", "checkpoint", "none")


@dataclass(frozen=True)
class Subset:
    """A selection of frames: splits, optionally narrowed to sequences (CamVid sequences,
    A2D2 scenes, Cityscapes cities), file stems, or a fraction of each sequence in
    file-name order (e.g. ``(0.8, 1.0)``: the last fifth of every sequence)."""

    splits: tuple[str, ...] = ("train",)
    sequences: tuple[str, ...] | None = None
    files: tuple[str, ...] | None = None
    fraction: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_fraction(self.fraction)

    def describe(self) -> str:
        """Short text, e.g. ``test:0001TP`` or ``train:0006R0@0.8-1``."""
        text = ",".join(self.splits)
        if self.sequences:
            text += ":" + ",".join(self.sequences)
        if self.fraction is not None:
            text += f"@{self.fraction[0]:g}-{self.fraction[1]:g}"
        if self.files is not None:
            text += f" ({len(self.files)} files)"
        return text


@dataclass(frozen=True)
class ExpertStage:
    """Stage 1 for one expert: its name (domain), its data and how long to train it."""

    name: str
    subset: Subset
    epochs: int
    init_from: str | None = None  # start from another expert's weights (name)
    lr: float | None = None


@dataclass(frozen=True)
class GateStage:
    """Stage 2: the gate (and optional conv) on frozen experts in eval mode."""

    subset: Subset
    epochs: int
    lr: float = 1e-3


@dataclass(frozen=True)
class DataConfig:
    """The dataset and the sizes the network trains at.

    Attributes:
        dataset: ``camvid``, ``a2d2`` or ``cityscapes``.
        root: the dataset folder.
        input_size: network input (H, W) the frames are scaled to (before augmentation).
        crop_size: training crop (H, W).
        scale_range: random rescale around ``input_size``.
        a2d2_mapping: ``paper38`` or ``coarse`` (A2D2 only).
        cache_size: hold training frames in memory at this (H, W) instead of their full
            size (``None``: full size; use it for A2D2 and Cityscapes).
    """

    dataset: DatasetName = "camvid"
    root: str = "../shared/data/camvid"
    input_size: tuple[int, int] = (240, 320)
    crop_size: tuple[int, int] = (192, 256)
    scale_range: tuple[float, float] = (0.75, 1.5)
    a2d2_mapping: str = "paper38"
    cache_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {DATASET_NAMES}")


@dataclass(frozen=True)
class EvalConfig:
    """What ``moe-perception evaluate`` measures (the ``evaluation`` section of a config).

    Attributes:
        validation: frames for fitting temperatures and choosing thresholds.
        test: the in-distribution test frames (the reference for OOD detection).
        ood: named out-of-distribution subsets, e.g. ``(("dusk", Subset(...)),)``.
        corruptions: corruptions applied to the test frames (each is an OOD condition).
        severities: severities of each corruption.
        models: views to evaluate: ``moe``, ``ensemble``, ``experts`` (each expert
            alone), ``expert:NAME``, ``mc_dropout`` (first expert) or ``mc_dropout:NAME``.
        mc_samples: passes of MC dropout.
        temperature: ``fit`` (each view on ``validation``), ``checkpoint`` or ``none``.
        bootstrap: resamples of images for the intervals (0: none).
        batch_size: frames per forward pass.
        examples: example frames drawn per condition.
        limit: evaluate at most this many frames per condition (evenly spaced; 0: all).
        seed: corruption and bootstrap seed.
    """

    validation: Subset | None = Subset(splits=("val",))
    test: Subset = Subset(splits=("test",))
    ood: tuple[tuple[str, Subset], ...] = ()
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    models: tuple[str, ...] = ("moe", "ensemble", "experts")
    mc_samples: int = 10
    temperature: TemperatureMode = "fit"
    bootstrap: int = 1000
    batch_size: int = 4
    examples: int = 3
    limit: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature not in TEMPERATURE_MODES:
            raise ValueError(
                f"unknown temperature mode {self.temperature!r}; choose from {TEMPERATURE_MODES}"
            )
        from moe_perception.data.corruptions import CORRUPTIONS, SEVERITIES

        unknown = sorted(set(self.corruptions) - set(CORRUPTIONS))
        if unknown:
            raise ValueError(f"unknown corruptions {unknown}; choose from {CORRUPTIONS}")
        bad = sorted(set(self.severities) - set(SEVERITIES))
        if bad:
            raise ValueError(f"severities must be in {SEVERITIES}, got {bad}")
        names = [name for name, _ in self.ood]
        if len(set(names)) != len(names):
            raise ValueError(f"OOD subset names must be unique, got {names}")


@dataclass(frozen=True)
class TrainConfig:
    """A whole two-stage training run."""

    name: str
    data: DataConfig
    model: ArchConfig
    experts: tuple[ExpertStage, ...]
    gate: GateStage | None
    validation: Subset = Subset(splits=("val",))
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 0  # 0: let torch decide
    provenance: dict[str, Any] = field(default_factory=dict)
    evaluation: EvalConfig | None = None
    experts_from: str | None = None  # a run folder whose expert_<name>.pt are reused

    def __post_init__(self) -> None:
        if len(self.experts) != self.model.num_experts:
            raise ValueError(
                f"model has {self.model.num_experts} experts but {len(self.experts)} expert "
                "stages are configured"
            )
        names = [e.name for e in self.experts]
        if len(set(names)) != len(names):
            raise ValueError(f"expert names must be unique, got {names}")
        for stage in self.experts:
            earlier = names[: names.index(stage.name)]
            if stage.init_from is not None and stage.init_from not in earlier:
                raise ValueError(
                    f"expert {stage.name!r} starts from {stage.init_from!r}, which is not an "
                    "earlier expert"
                )
        if self.model.kind == "moe" and self.gate is None:
            raise ValueError("an MoE needs a gate stage")


def _subset(data: dict[str, Any] | None) -> Subset:
    data = dict(data or {})
    _unknown(data, {"splits", "sequences", "files", "fraction"}, "subset")
    sequences, files, fraction = data.get("sequences"), data.get("files"), data.get("fraction")
    return Subset(
        splits=tuple(data.get("splits", ("train",))),
        sequences=None if sequences is None else tuple(str(s) for s in sequences),
        files=None if files is None else tuple(str(f) for f in files),
        fraction=None if fraction is None else tuple(float(v) for v in fraction),
    )


def load_eval_config(data: dict[str, Any] | None) -> EvalConfig:
    """Build an :class:`EvalConfig` from the ``evaluation`` mapping of a YAML config."""
    data = _known(EvalConfig, dict(data or {}), "evaluation")
    if "validation" in data:
        data["validation"] = None if data["validation"] is None else _subset(data["validation"])
    if "test" in data:
        data["test"] = _subset(data["test"])
    if "ood" in data:
        ood = data["ood"] or {}
        if not isinstance(ood, dict):
            raise ValueError("evaluation.ood must map names to subsets")
        data["ood"] = tuple((str(name), _subset(subset)) for name, subset in ood.items())
    for key in ("corruptions", "severities", "models"):
        if key in data:
            data[key] = tuple(data[key] or ())
    return EvalConfig(**data)


def _unknown(data: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(data) - known)
    if extra:
        raise ValueError(f"unknown keys in {where}: {extra}")


def _known(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    _unknown(data, {f.name for f in fields(cls)}, where)
    return data


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training YAML; unknown keys and missing required ones are errors."""
    import yaml

    with open(path, encoding="utf-8") as stream:
        raw = yaml.safe_load(stream)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    raw = _known(TrainConfig, dict(raw), str(path))
    data = _known(DataConfig, dict(raw.pop("data", {})), "data")
    for key in ("input_size", "crop_size", "scale_range", "cache_size"):
        if data.get(key) is not None:
            data[key] = tuple(data[key])
    for required in ("name", "model", "experts"):
        if required not in raw:
            raise ValueError(f"{path}: missing required key {required!r}")
    experts = []
    for entry in raw.pop("experts"):
        entry = _known(ExpertStage, dict(entry), "experts[]")
        entry["subset"] = _subset(entry.get("subset"))
        experts.append(ExpertStage(**entry))
    gate = raw.pop("gate", None)
    if gate is not None:
        gate = _known(GateStage, dict(gate), "gate")
        gate["subset"] = _subset(gate.get("subset"))
        gate = GateStage(**gate)
    validation = _subset(raw.pop("validation", {"splits": ["val"]}))
    evaluation = raw.pop("evaluation", None)
    if evaluation is not None:
        evaluation = load_eval_config(evaluation)
    return TrainConfig(
        evaluation=evaluation,
        data=DataConfig(**data),
        model=ArchConfig.from_dict(raw.pop("model")),
        experts=tuple(experts),
        gate=gate,
        validation=validation,
        **raw,
    )
