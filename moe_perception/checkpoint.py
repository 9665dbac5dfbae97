"""Checkpoints: one file with weights plus metadata, loaded with ``weights_only=True`` only.

Layout of the file (a ``torch.save`` dict of tensors and plain Python values):

- ``format``: the string ``"moe_perception"``;
- ``format_version``: :data:`FORMAT_VERSION`;
- ``metadata``: :class:`CheckpointMetadata` as a JSON string;
- ``state_dict``: the model's tensors (float ones may be stored in fp16).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from moe_perception.model import ArchConfig, build_model

FORMAT = "moe_perception"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class CheckpointMetadata:
    """What a checkpoint says about its model.

    Attributes:
        arch: the architecture, enough to rebuild the modules.
        class_names: one name per class.
        class_colors: one RGB colour per class.
        input_size: network input (height, width) the model was trained for.
        mean: per-channel normalisation mean of RGB in [0, 1].
        std: per-channel normalisation standard deviation.
        expert_names: one name per expert (e.g. its domain).
        temperature: logits are divided by this before softmax (fitted on validation).
        provenance: free-form facts: dataset, split, recipe, commit, metrics.
    """

    arch: ArchConfig
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    input_size: tuple[int, int] = (240, 320)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    expert_names: tuple[str, ...] = ()
    temperature: float = 1.0
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = self.arch.num_classes
        if len(self.class_names) != c or len(self.class_colors) != c:
            raise ValueError(
                f"{c} classes in the architecture but {len(self.class_names)} names and "
                f"{len(self.class_colors)} colours"
            )
        if self.expert_names and len(self.expert_names) != self.arch.num_experts:
            raise ValueError(
                f"{self.arch.num_experts} experts but {len(self.expert_names)} expert names"
            )
        if any(size % 16 for size in self.input_size):
            raise ValueError(f"input_size {self.input_size} must be divisible by 16")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def to_json(self) -> str:
        data = asdict(self)
        data["arch"] = self.arch.to_dict()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> CheckpointMetadata:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown metadata fields {unknown}")
        # Checkpoints written before the gate had a bottleneck carry the full 3x3 gate.
        data["arch"] = ArchConfig.from_dict({"gate_bottleneck": False, **data["arch"]})
        for key in ("class_names", "expert_names", "input_size", "mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        data["class_colors"] = tuple(tuple(int(v) for v in rgb) for rgb in data["class_colors"])
        return cls(**data)

    def with_changes(self, **changes: Any) -> CheckpointMetadata:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return CheckpointMetadata(**data)


def save_checkpoint(
    path: str | Path, model: nn.Module, metadata: CheckpointMetadata, fp16: bool = False
) -> None:
    """Write ``model`` and ``metadata`` to ``path`` atomically (temporary file, rename).

    Args:
        path: destination file.
        model: a model built from ``metadata.arch``.
        metadata: its description.
        fp16: store floating-point tensors in half precision (half the size).
    """
    state: dict[str, Tensor] = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if fp16 and tensor.is_floating_point():
            tensor = tensor.half()
        state[key] = tensor.contiguous()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": metadata.to_json(),
        "state_dict": state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    partial.replace(path)


def read_checkpoint(path: str | Path) -> tuple[CheckpointMetadata, dict[str, Tensor]]:
    """Read and validate a checkpoint file without building the model.

    Raises:
        CheckpointError: missing, truncated, not a checkpoint, carrying pickled objects,
            of another format version, or with invalid metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refusing {path}: it carries pickled Python objects, which a checkpoint must "
            f"not contain (only tensors and plain values load). Detail: {error}"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"cannot read {path}: the file is truncated or not a torch checkpoint ({error})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a moe_perception checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this moe_perception reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        metadata = CheckpointMetadata.from_json(payload["metadata"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has invalid metadata: {error}") from error
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} has no valid state_dict of tensors")
    return metadata, state


def load_checkpoint(path: str | Path) -> tuple[nn.Module, CheckpointMetadata]:
    """Rebuild the model stored in ``path`` (float32, eval mode, on the CPU).

    Raises:
        CheckpointError: see :func:`read_checkpoint`; also when the weights do not match
            the architecture the metadata describes (names the keys).
    """
    metadata, state = read_checkpoint(path)
    model = build_model(metadata.arch)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if expected[k].shape != state[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"{path} does not match its architecture {metadata.arch.name} "
            f"({metadata.arch.encoder}): missing keys {missing[:3]}, unexpected keys "
            f"{unexpected[:3]}, wrong shapes {wrong_shape[:3]}"
        )
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state)
    return model.eval(), metadata
