"""Export a model *with* its uncertainty outputs to ONNX, and run it with onnxruntime.

The exported graph takes normalised images and returns the labels (or fused logits),
the four uncertainty maps and the image-level gate weights, so a deployment without
PyTorch gets the same one-pass uncertainty. Needs the ``onnx`` extra (``onnx``,
``onnxruntime``) and ``onnxscript`` for torch's exporter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    import numpy as np

HeadKind = Literal["labels", "logits"]
HEAD_KINDS: tuple[HeadKind, ...] = ("labels", "logits")
MAP_OUTPUTS = ("predictive_entropy", "mutual_information", "expert_variance", "gate_entropy")


def output_names(head: HeadKind) -> tuple[str, ...]:
    """Names of the exported graph's outputs, in order."""
    return (head, *MAP_OUTPUTS, "gate_weights")


class WithUncertainty(nn.Module):
    """A model and :func:`~moe_perception.uncertainty.uncertainty_maps` as one module.

    Args:
        model: returns a :class:`~moe_perception.model.ModelOutput`.
        temperature: divides the expert logits before the softmax of the maps.
        head: ``labels`` (argmax of the fused logits, uint8) or the fused ``logits``.

    Shape:
        - Input: (B, 3, H, W), normalised, H and W divisible by 16.
        - Output: a tuple: labels (B, H, W) uint8 or logits (B, C, H, W); the four maps
          (B, H, W) in [0, 1] (see :data:`MAP_OUTPUTS`); gate weights (B, K).
    """

    def __init__(self, model: nn.Module, temperature: float = 1.0, head: HeadKind = "labels"):
        super().__init__()
        if head not in HEAD_KINDS:
            raise ValueError(f"unknown head {head!r}; choose one of {HEAD_KINDS}")
        self.model = model
        self.temperature = temperature
        self.head = head

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        from moe_perception.uncertainty import uncertainty_maps

        output = self.model(images)
        maps = uncertainty_maps(output, self.temperature)
        first = output.logits
        if self.head == "labels":
            first = first.argmax(dim=1).to(torch.uint8)
        return (first, *(getattr(maps, name) for name in MAP_OUTPUTS), maps.image_gate_weights)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int],
    temperature: float = 1.0,
    head: HeadKind = "labels",
    dynamic_batch: bool = True,
) -> Path:
    """Write ``model`` with its uncertainty outputs to an ONNX file (one file, opset 18+).

    Args:
        model: a model returning :class:`~moe_perception.model.ModelOutput`; exported in
            eval mode, float32, on the CPU.
        path: the ``.onnx`` file to write.
        input_size: the network's (H, W), fixed in the graph.
        temperature: calibration temperature of the maps.
        head: first output, ``labels`` or ``logits``.
        dynamic_batch: the batch (number of cameras) may vary at run time.

    Returns:
        ``path``.

    Raises:
        RuntimeError: the ``onnx`` extra (or ``onnxscript``) is missing.
    """
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError as error:
            raise RuntimeError(
                f"ONNX export needs '{module}': python3 -m pip install -e '.[onnx]' onnxscript"
            ) from error
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = WithUncertainty(model, temperature, head).eval().cpu().float()
    example = torch.zeros(2 if dynamic_batch else 1, 3, *input_size)
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = {"images": {0: torch.export.Dim("batch", min=1, max=64)}}
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=list(output_names(head)),
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    return path


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for ``path`` (``threads``: intra-op threads).

    Raises:
        RuntimeError: onnxruntime is not installed.
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise RuntimeError(
            "running ONNX needs onnxruntime: python3 -m pip install -e '.[onnx]'"
        ) from error
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_onnx(session: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run a session on float32 images (B, 3, H, W); outputs by name."""
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: images})
    return dict(zip(names, values))


def parity(
    reference: Mapping[str, Tensor], onnx_outputs: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Largest absolute difference per output between PyTorch and onnxruntime.

    Labels are compared as the fraction of pixels whose class differs (a label can flip
    where two logits are within rounding of each other).

    Args:
        reference: PyTorch outputs by name.
        onnx_outputs: onnxruntime outputs by the same names.

    Returns:
        ``{name: largest absolute difference}``, and ``labels`` as a mismatch fraction.
    """
    result: dict[str, float] = {}
    for name, expected in reference.items():
        actual = torch.from_numpy(onnx_outputs[name])
        if actual.shape != expected.shape:
            raise ValueError(
                f"{name}: onnx shape {tuple(actual.shape)}, torch {tuple(expected.shape)}"
            )
        if name == "labels":
            result[name] = float((actual != expected.cpu()).float().mean())
        else:
            result[name] = float((actual.float() - expected.detach().cpu().float()).abs().max())
    return result


def torch_outputs(wrapper: WithUncertainty, images: Tensor) -> dict[str, Tensor]:
    """The wrapper's outputs by their ONNX names, computed with PyTorch."""
    with torch.inference_mode():
        values = wrapper(images)
    return dict(zip(output_names(wrapper.head), values))
