"""Checkpoint round trip and the refusal of unsafe, damaged or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moe_perception.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from moe_perception.data import CAMVID_CLASSES, CAMVID_COLORS
from moe_perception.model import ArchConfig, build_model


def test_round_trip_keeps_weights_and_metadata(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model, metadata = load_checkpoint(tiny_checkpoint)
    assert metadata.arch == ArchConfig(kind="moe", num_experts=2, gate="simple")
    assert metadata.class_names == CAMVID_CLASSES
    assert metadata.class_colors == CAMVID_COLORS
    assert metadata.input_size == (64, 96)
    assert metadata.expert_names == ("daylight", "dusk")
    copy = tmp_path / "copy.pt"
    save_checkpoint(copy, model, metadata.with_changes(temperature=1.5))
    again, metadata_again = load_checkpoint(copy)
    assert metadata_again.temperature == 1.5
    for (key, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), key
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(model(x).logits, again(x).logits)


def test_fp16_storage_halves_the_file(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model, metadata = load_checkpoint(tiny_checkpoint)
    half = tmp_path / "half.pt"
    save_checkpoint(half, model, metadata, fp16=True)
    assert half.stat().st_size < 0.55 * tiny_checkpoint.stat().st_size
    loaded, _ = load_checkpoint(half)
    # Loaded back in float32, within fp16 rounding of the original.
    for key, tensor in loaded.state_dict().items():
        assert tensor.dtype == model.state_dict()[key].dtype
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0.05, atol=0.05)


class _Payload:
    """An object whose unpickling would run code: what weights_only refuses."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_objects_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_file_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.pt"
    data = tiny_checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt.*truncated or not a torch"):
        load_checkpoint(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_other_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a moe_perception checkpoint"):
        read_checkpoint(path)


def _rewrite(source: Path, target: Path, **changes) -> Path:
    payload = torch.load(source, weights_only=True)
    payload.update(changes)
    torch.save(payload, target)
    return target


def test_other_format_version_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = _rewrite(tiny_checkpoint, tmp_path / "v99.pt", format_version=99)
    with pytest.raises(CheckpointError, match="format version 99.*reads version 1"):
        load_checkpoint(path)


def test_invalid_metadata_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    metadata = json.loads(torch.load(tiny_checkpoint, weights_only=True)["metadata"])
    metadata["class_names"] = metadata["class_names"][:3]
    path = _rewrite(tiny_checkpoint, tmp_path / "meta.pt", metadata=json.dumps(metadata))
    with pytest.raises(CheckpointError, match="invalid metadata: 11 classes .* 3 names"):
        load_checkpoint(path)


def test_weights_of_another_architecture_are_refused(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    other = build_model(ArchConfig(num_experts=3, num_classes=5, gate="spatial"))
    path = _rewrite(tiny_checkpoint, tmp_path / "mismatch.pt", state_dict=other.state_dict())
    with pytest.raises(CheckpointError, match="does not match its architecture moe-simple-k2"):
        load_checkpoint(path)


def test_metadata_validation() -> None:
    arch = ArchConfig()
    with pytest.raises(ValueError, match="divisible by 16"):
        CheckpointMetadata(arch, CAMVID_CLASSES, CAMVID_COLORS, input_size=(100, 96))
    with pytest.raises(ValueError, match="temperature must be positive"):
        CheckpointMetadata(arch, CAMVID_CLASSES, CAMVID_COLORS, temperature=0.0)
    with pytest.raises(ValueError, match="2 experts but 3 expert names"):
        CheckpointMetadata(arch, CAMVID_CLASSES, CAMVID_COLORS, expert_names=("a", "b", "c"))


def test_checkpoints_from_before_the_gate_bottleneck_load_the_full_gate(
    tiny_checkpoint: Path,
) -> None:
    metadata, _ = read_checkpoint(tiny_checkpoint)
    data = json.loads(metadata.to_json())
    del data["arch"]["gate_bottleneck"]  # what checkpoints written before it carry
    assert not CheckpointMetadata.from_json(json.dumps(data)).arch.gate_bottleneck
    full = build_model(ArchConfig(gate_bottleneck=False))
    assert "gate.reduce.3.weight" not in full.state_dict()  # one conv, BN, ReLU
    assert "gate.reduce.3.weight" in build_model(ArchConfig()).state_dict()
