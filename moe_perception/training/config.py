"""Training configuration: frozen dataclasses loaded from YAML (see ``config/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from moe_perception.model import ArchConfig

DatasetName = Literal["camvid"]


@dataclass(frozen=True)
class Subset:
    """A selection of frames: splits, optionally narrowed to sequences or file stems."""

    splits: tuple[str, ...] = ("train",)
    sequences: tuple[str, ...] | None = None
    files: tuple[str, ...] | None = None


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
    dataset: DatasetName = "camvid"
    root: str = "../shared/data/camvid"
    input_size: tuple[int, int] = (240, 320)
    crop_size: tuple[int, int] = (192, 256)
    scale_range: tuple[float, float] = (0.75, 1.5)


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
    _unknown(data, {"splits", "sequences", "files"}, "subset")
    sequences, files = data.get("sequences"), data.get("files")
    return Subset(
        splits=tuple(data.get("splits", ("train",))),
        sequences=None if sequences is None else tuple(sequences),
        files=None if files is None else tuple(files),
    )


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
    for key in ("input_size", "crop_size", "scale_range"):
        if key in data:
            data[key] = tuple(data[key])
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
    return TrainConfig(
        data=DataConfig(**data),
        model=ArchConfig.from_dict(raw.pop("model")),
        experts=tuple(experts),
        gate=gate,
        validation=validation,
        **raw,
    )
