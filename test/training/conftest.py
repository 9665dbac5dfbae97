"""Tiny generated CamVid folders and configs for the training and evaluation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_camvid(root: Path, frames: dict[str, list[str]], size=(32, 48), seed=0) -> Path:
    """A CamVid-layout folder: ``frames`` maps a split to frame stems.

    Labels are learnable: the class of a pixel follows its image row band and the image
    is a noisy colour per class, so a few steps of training move the metrics.
    """
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (12, 3))
    for split, stems in frames.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for stem in stems:
            label = np.zeros(size, dtype=np.uint8)
            bands = rng.permutation(11)[:4]
            for b, cls in enumerate(bands):
                label[b * size[0] // 4 : (b + 1) * size[0] // 4] = cls
            label[rng.random(size) < 0.03] = 11  # void
            image = palette[label] + rng.normal(0, 20, (*size, 3))
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / split / f"{stem}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"{stem}.png")
    return root


@pytest.fixture(scope="session")
def tiny_camvid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("camvid")
    return write_camvid(
        root,
        {
            "train": [f"0006R0_f{i:05d}" for i in range(4)]
            + [f"0016E5_{i:05d}" for i in range(4)],
            "val": [f"0016E5_{i:05d}" for i in range(10, 12)],
            "test": [f"0001TP_{i:06d}" for i in range(2)]
            + [f"Seq05VD_f{i:05d}" for i in range(2)],
        },
    )


TINY_CONFIG = """
name: tiny
data:
  dataset: camvid
  root: {root}
  input_size: [32, 48]
  crop_size: [32, 48]
  scale_range: [0.9, 1.1]
model:
  kind: {kind}
  num_experts: {k}
  gate: {gate}
  gate_conv: {gate_conv}
  decoder_channels: 32
experts:
{experts}
{gate_stage}
validation: {{splits: [val]}}
batch_size: 2
lr: 0.001
seed: 0
threads: 1
"""


def tiny_config(
    root: Path,
    path: Path,
    epochs: int = 1,
    kind: str = "moe",
    gate: str = "simple",
    gate_conv: bool = False,
    gate_epochs: int = 1,
) -> Path:
    if kind == "moe":
        experts = "\n".join(
            f"  - {{name: {name}, subset: {{splits: [train], sequences: [{seq}]}}, "
            f"epochs: {epochs}}}"
            for name, seq in (("a", "0006R0"), ("b", "0016E5"))
        )
        stage = f"gate: {{subset: {{splits: [train]}}, epochs: {gate_epochs}}}"
        k = 2
    else:
        experts = f"  - {{name: all, subset: {{splits: [train]}}, epochs: {epochs}}}"
        stage, k = "", 1
    path.write_text(
        TINY_CONFIG.format(
            root=root,
            kind=kind,
            k=k,
            gate=gate,
            gate_conv=str(gate_conv).lower(),
            experts=experts,
            gate_stage=stage,
        )
    )
    return path
