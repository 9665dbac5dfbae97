"""FLOPs, the machine's matrix-multiply FLOP/s, and peak tensor memory of a forward pass.

FLOPs come from torch's own counter (:class:`torch.utils.flop_counter.FlopCounterMode`),
which counts matrix multiplications and convolutions (2 FLOPs per multiply-add) and
nothing else: element-wise work such as the uncertainty maps counts as zero.

Both FLOPs and the CPU peak memory are traced on fake or meta tensors (shapes without
data), so they cost no computation and are exact for the shapes given. The peak memory is that
of the tensors the forward creates (activations and outputs, not the weights or the
input), as the allocator sees them between operators; scratch space inside one kernel
(e.g. a convolution's workspace) is not included. On CUDA the allocator's own peak is
measured on a real call instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

TraceMode = Literal["fake", "meta"]


@dataclass(frozen=True)
class Cost:
    """What one call costs, independent of the machine.

    Attributes:
        flops: floating-point operations counted by torch's flop counter.
        peak_bytes: most bytes of tensors the call had alive at once (see module doc).
    """

    flops: int
    peak_bytes: int


def conv2d_flops(
    batch: int,
    in_channels: int,
    out_channels: int,
    out_size: tuple[int, int],
    kernel: tuple[int, int],
    groups: int = 1,
) -> int:
    """FLOPs of a 2-D convolution as torch's counter reports them (bias not counted).

    Each output element needs ``in_channels / groups * kh * kw`` multiply-adds, each
    counted as 2 FLOPs.
    """
    per_output = (in_channels // groups) * kernel[0] * kernel[1]
    return 2 * batch * out_channels * out_size[0] * out_size[1] * per_output


class _LiveTensors(TorchDispatchMode):
    """Dispatch mode tracking the bytes of storages created by operators while alive.

    Views and in-place results share an input's storage and cost nothing; a storage is
    released when no tensor refers to it any more (checked before each operator).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _release(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self._release()
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        leaves = tree_leaves((args, kwargs))
        inputs = {t.untyped_storage()._cdata for t in leaves if isinstance(t, Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self.live:
                continue
            size = storage.nbytes()
            self.live[key] = (StorageWeakRef(storage), size)
            self.current += size
        self.peak = max(self.peak, self.current)
        return out


def trace_cost(
    function: Callable[..., object],
    input_shapes: Sequence[Sequence[int]],
    mode: TraceMode = "fake",
    dtype: torch.dtype = torch.float32,
) -> Cost:
    """FLOPs and peak tensor memory of ``function`` on data-free inputs of given shapes.

    Args:
        function: called once with one tensor per shape, under ``no_grad``.
        input_shapes: the shape of each positional input.
        mode: ``fake`` runs on fake tensors, so ``function`` may use modules with real
            weights (they stay untouched); ``meta`` passes meta tensors, faster, for
            functions whose modules live on the meta device.
        dtype: element type of the inputs.

    Returns:
        The :class:`Cost`; nothing is computed, only shapes are propagated.
    """
    from contextlib import nullcontext

    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    if mode not in ("fake", "meta"):
        raise ValueError(f"unknown trace mode {mode!r}; choose fake or meta")
    device = "meta" if mode == "meta" else "cpu"
    context = FakeTensorMode(allow_non_fake_inputs=True) if mode == "fake" else nullcontext()
    with context:
        inputs = [torch.empty(*shape, device=device, dtype=dtype) for shape in input_shapes]
        counter = FlopCounterMode(display=False)
        tracker = _LiveTensors()
        with torch.no_grad(), counter, tracker:
            function(*inputs)
    return Cost(flops=int(counter.get_total_flops()), peak_bytes=int(tracker.peak))


def measured_peak_bytes(function: Callable[[], object], device: torch.device) -> int:
    """Peak bytes the CUDA caching allocator held during one real call, above the start.

    Raises:
        ValueError: ``device`` is not a CUDA device (use :func:`trace_cost` on the CPU).
    """
    if device.type != "cuda":
        raise ValueError("measured peak memory needs a CUDA device; trace it on the CPU")
    torch.cuda.synchronize(device)
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    function()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - start)


def matmul_flops_per_second(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int = 2048,
    repeats: int = 5,
) -> float:
    """Best achieved FLOP/s of a square matrix multiply: the practical limit here.

    Args:
        device: where to multiply.
        dtype: element type (fp16 on CUDA for the half-precision limit).
        size: the matrices are (size, size); 2 * size**3 FLOPs per multiply.
        repeats: timed multiplies after one warm-up; the fastest counts.
    """
    import time

    from moe_perception.benchmark.timing import synchronize

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    out = torch.empty_like(a)
    best = float("inf")
    with torch.inference_mode():
        for index in range(repeats + 1):
            synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            synchronize(device)
            if index:
                best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def model_flops(model: torch.nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward of ``model`` on an input of ``input_shape`` (traced, free)."""
    return trace_cost(model, [input_shape]).flops


def tensor_bytes(tensors: Sequence[Tensor]) -> int:
    """Total bytes of the given tensors' elements (e.g. a model's parameters)."""
    return sum(t.numel() * t.element_size() for t in tensors)
