"""Shared fixtures: a tiny real model checkpoint, the CamVid path, DDS isolation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CAMVID_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def pytest_configure(config: pytest.Config) -> None:
    # Real DDS stays on this machine, and each test run gets its own domain so two runs
    # (or a run and a demo) never see each other's topics.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The real CamVid folder; tests that need it skip, saying why, where it is absent."""
    root = Path(os.environ.get("MOE_PERCEPTION_CAMVID", CAMVID_ROOT))
    if not (root / "test").is_dir():
        pytest.skip(f"CamVid not found at {root} (set MOE_PERCEPTION_CAMVID)")
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (randomly initialised) K=2 MoE checkpoint with a small input size."""
    import torch

    from moe_perception.checkpoint import CheckpointMetadata, save_checkpoint
    from moe_perception.data import CAMVID_CLASSES, CAMVID_COLORS
    from moe_perception.model import ArchConfig, build_model

    torch.manual_seed(0)
    arch = ArchConfig(kind="moe", num_experts=2, gate="simple")
    model = build_model(arch)
    metadata = CheckpointMetadata(
        arch=arch,
        class_names=CAMVID_CLASSES,
        class_colors=CAMVID_COLORS,
        input_size=(64, 96),
        expert_names=("daylight", "dusk"),
        provenance={"dataset": "none (test fixture)"},
    )
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.pt"
    save_checkpoint(path, model.eval(), metadata)
    return path
