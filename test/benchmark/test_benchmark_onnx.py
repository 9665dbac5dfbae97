"""ONNX export of a model with its uncertainty outputs: parity with PyTorch in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("onnx", reason="the onnx extra is not installed (python3 -m pip install onnx)")
pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (onnxruntime)")

from moe_perception.benchmark.onnx_export import (  # noqa: E402
    MAP_OUTPUTS,
    WithUncertainty,
    export_onnx,
    onnx_session,
    output_names,
    parity,
    run_onnx,
    torch_outputs,
)
from moe_perception.model import ModelOutput  # noqa: E402

# float32 end to end; observed differences are ~1e-6 (stated in the failure message).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported_moe(tmp_path_factory: pytest.TempPathFactory) -> tuple[WithUncertainty, Path]:
    """A real K=2 spatial-gate MoE (random weights, sharpened) exported with logits."""
    from moe_perception.model import ArchConfig, build_model

    torch.manual_seed(0)
    model = build_model(ArchConfig(kind="moe", num_experts=2, gate="spatial")).eval()
    with torch.no_grad():
        for expert in model.experts:
            # Random heads (and gate) give near-uniform outputs; sharpen them so that
            # the experts disagree, the gate routes, and every map varies.
            expert.head.weight.mul_(200.0)
        model.gate.out.weight.mul_(50.0)
    path = tmp_path_factory.mktemp("onnx") / "moe.onnx"
    export_onnx(model, path, (64, 96), head="logits", dynamic_batch=True)
    return WithUncertainty(model, head="logits").eval(), path


@pytest.mark.slow
def test_onnx_outputs_match_pytorch(exported_moe: tuple[WithUncertainty, Path]) -> None:
    wrapper, path = exported_moe
    session = onnx_session(path, threads=1)
    assert [o.name for o in session.get_outputs()] == list(output_names("logits"))
    # A batch of 3 cameras although the export example had 2: the batch is dynamic.
    images = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    reference = torch_outputs(wrapper, images)
    for name in MAP_OUTPUTS:
        assert reference[name].std() > 1e-3, f"{name} is constant: the parity would be vacuous"
    onnx_outputs = run_onnx(session, images.numpy())
    differences = parity(reference, onnx_outputs)
    print(f"largest absolute differences, onnxruntime vs PyTorch: {differences}")
    assert set(differences) == set(output_names("logits"))
    for name, difference in differences.items():
        assert difference < TOLERANCE, f"{name}: largest absolute difference {difference:.3e}"
    assert onnx_outputs["gate_weights"].shape == (3, 2)
    assert onnx_outputs["predictive_entropy"].shape == (3, 64, 96)


class _TinySegmenter(nn.Module):
    """Two 1x1-conv 'experts' and a fixed image-level gate: a fast stand-in for export."""

    def __init__(self) -> None:
        super().__init__()
        self.experts = nn.ModuleList([nn.Conv2d(3, 5, 1), nn.Conv2d(3, 5, 1)])

    def forward(self, images: Tensor) -> ModelOutput:
        logits = torch.stack([expert(images) for expert in self.experts], dim=1) * 5
        weights = torch.tensor([0.3, 0.7]).view(1, 2, 1, 1).expand(images.shape[0], 2, 1, 1)
        fused = (weights.unsqueeze(2) * logits).sum(dim=1)
        return ModelOutput(fused, logits, weights)


def test_labels_head_exports_uint8_labels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _TinySegmenter().eval()
    path = export_onnx(model, tmp_path / "tiny.onnx", (16, 32), head="labels")
    wrapper = WithUncertainty(model, head="labels")
    images = torch.randn(2, 3, 16, 32)
    reference = torch_outputs(wrapper, images)
    outputs = run_onnx(onnx_session(path), images.numpy())
    assert outputs["labels"].dtype.name == "uint8"
    assert reference["labels"].dtype == torch.uint8
    differences = parity(reference, outputs)
    assert differences["labels"] == 0.0, "fraction of pixels whose label differs"
    for name in (*MAP_OUTPUTS, "gate_weights"):
        assert differences[name] < TOLERANCE, f"{name}: {differences[name]:.3e}"


def test_unknown_head_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown head"):
        WithUncertainty(_TinySegmenter(), head="probabilities")  # type: ignore[arg-type]
