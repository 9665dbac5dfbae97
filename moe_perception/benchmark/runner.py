"""The benchmark suite behind ``moe-perception benchmark``: one run, side by side.

For each architecture (the default EfficientNet-Lite0 model, and a ResNet-101 paper-sized
one) and each resolution, it times one expert, the ensemble of K experts, the MoE with
each gate and MC dropout, interleaved in rounds so that a drifting machine load hits all
of them alike, together with all uncertainty maps of each MoE output. It adds FLOPs and
peak memory (:mod:`~moe_perception.benchmark.flops`), the matrix-multiply FLOP/s of this
machine measured next to each block, scaling with K and with the number of cameras, the
speed-ups (channels-last, torch.compile, onnxruntime with its parity), the node's
end-to-end overhead when its results are given, and checks the issue's targets.

Speed does not depend on the weights, so the models are randomly initialised; nothing is
downloaded. Ratios use the *best* call of each contender (the cost with the least
interference), medians are recorded too.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

ArchName = Literal["default", "resnet101"]
ARCH_NAMES: tuple[ArchName, ...] = ("default", "resnet101")
VariantName = Literal[
    "single", "ensemble", "moe-simple", "moe-classwise", "moe-spatial", "mc-dropout"
]
VARIANTS: tuple[VariantName, ...] = (
    "single",
    "ensemble",
    "moe-simple",
    "moe-classwise",
    "moe-spatial",
    "mc-dropout",
)
Speedup = Literal["channels-last", "compile", "onnxruntime", "fp16"]
# Resolutions as the issue names them, (width, height); the network input is padded up to
# multiples of 16, as the Segmenter pads.
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((480, 360), (640, 480), (1920, 1208))
HEADLINE_SIZE = (640, 480)
TARGET_MAPS_SHARE = 0.03
TARGET_MOE_OVER_ENSEMBLE = 1.15
TARGET_NODE_OVERHEAD = 1.10
TARGET_MATMUL_FRACTION = 0.50


@dataclass(frozen=True)
class BenchmarkConfig:
    """What one benchmark run measures.

    Attributes:
        archs: architectures: ``default`` (ArchConfig()) and/or ``resnet101``.
        sizes: nominal resolutions (width, height).
        variants: contenders timed at every architecture and size.
        num_experts: K of the MoE and the ensemble.
        mc_samples: passes of MC dropout.
        repeats: timed calls per contender at most (after one warm-up call).
        budget_s: a contender is timed about ``budget_s / (its warm-up time)`` times.
        single_call_s: a contender whose warm-up takes this long is timed only once.
        scaling_arch: architecture of the K and camera scaling and of the speed-ups.
        scaling_size: resolution (width, height) of the scaling and the speed-ups.
        scaling_experts: K values of the K scaling (empty: skipped).
        scaling_batches: camera counts of the batch scaling (empty: skipped).
        speedups: the speed-ups to compare with plain eager execution.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        fp16: run the main matrix in half precision (CUDA only).
        threads: torch intra-op threads (``None``: torch's default).
        node_results: a JSON file written by ``benchmarks/node_latency.py``.
        onnx_dir: where to keep the exported ONNX file (``None``: a temporary folder).
        seed: seeds the random weights and inputs.
    """

    archs: tuple[ArchName, ...] = ARCH_NAMES
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    variants: tuple[VariantName, ...] = VARIANTS
    num_experts: int = 2
    mc_samples: int = 10
    repeats: int = 5
    budget_s: float = 4.0
    single_call_s: float = 20.0
    scaling_arch: ArchName = "default"
    scaling_size: tuple[int, int] = HEADLINE_SIZE
    scaling_experts: tuple[int, ...] = (2, 3, 4)
    scaling_batches: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    speedups: tuple[Speedup, ...] = ("channels-last", "onnxruntime")
    device: str = "cpu"
    fp16: bool = False
    threads: int | None = None
    node_results: str | None = None
    onnx_dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for arch in (*self.archs, self.scaling_arch):
            if arch not in ARCH_NAMES:
                raise ValueError(f"unknown architecture {arch!r}; choose from {ARCH_NAMES}")
        for variant in self.variants:
            if variant not in VARIANTS:
                raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
        if self.num_experts < 2 or any(k < 2 for k in self.scaling_experts):
            raise ValueError("an MoE needs at least 2 experts")
        if any(b < 1 for b in self.scaling_batches):
            raise ValueError("batch sizes must be >= 1")
        for width, height in (*self.sizes, self.scaling_size):
            if width < 16 or height < 16:
                raise ValueError(f"size {width}x{height} is below 16 pixels")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")


def network_size(size: tuple[int, int]) -> tuple[int, int]:
    """The network input (H, W) for a nominal (width, height): padded to multiples of 16."""
    width, height = size
    return (math.ceil(height / 16) * 16, math.ceil(width / 16) * 16)


def size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _encoder(arch: ArchName) -> str:
    from moe_perception.model import DEFAULT_ENCODER

    return DEFAULT_ENCODER if arch == "default" else "resnet101"


def variant_label(variant: VariantName, num_experts: int, mc_samples: int) -> str:
    """Row label, e.g. ``moe-simple-k2``, ``ensemble-k2``, ``mc-dropout-10``."""
    if variant.startswith("moe-") or variant == "ensemble":
        return f"{variant}-k{num_experts}"
    if variant == "mc-dropout":
        return f"mc-dropout-{mc_samples}"
    return variant


def _log(message: str) -> None:
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


class _Models:
    """Random-init experts shared by all contenders of one architecture."""

    def __init__(self, arch: ArchName, num_experts: int, device: Any, dtype: Any) -> None:
        import contextlib

        import torch

        from moe_perception.model import ArchConfig, Expert

        config = ArchConfig(encoder=_encoder(arch))
        self.arch = arch
        self.device = device
        self.dtype = dtype
        with torch.device("meta") if str(device) == "meta" else contextlib.nullcontext():
            self.experts = [
                Expert(config.encoder, config.num_classes, config.decoder_channels, config.dropout)
                .eval()
                .to(device, dtype)
                for _ in range(num_experts)
            ]

    def build(
        self, variant: VariantName, num_experts: int, mc_samples: int, meta: bool = False
    ) -> Any:
        """One contender; ``meta`` builds it on the meta device, for tracing its cost."""
        from moe_perception.model import Ensemble, MCDropout, MixtureOfExperts, SingleExpert

        if meta:
            return _Models(self.arch, num_experts, "meta", self.dtype).build(
                variant, num_experts, mc_samples
            )
        experts = self.experts[:num_experts]
        if variant == "single":
            model = SingleExpert(experts[0])
        elif variant == "ensemble":
            model = Ensemble(experts)
        elif variant == "mc-dropout":
            model = MCDropout(experts[0], mc_samples)
        else:
            model = MixtureOfExperts(experts, variant.removeprefix("moe-"))  # type: ignore[arg-type]
        return model.eval().to(self.device, self.dtype)


def _parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _cost(function: Callable[..., object], shapes: Sequence[Sequence[int]]) -> Any:
    """FLOPs and peak memory on meta tensors (``function``'s modules must be on meta)."""
    from moe_perception.benchmark.flops import trace_cost

    return trace_cost(function, shapes, mode="meta")


def _maps_function(temperature: float = 1.0) -> Callable[..., object]:
    from moe_perception.model import ModelOutput
    from moe_perception.uncertainty import uncertainty_maps

    def maps(logits: Any, expert_logits: Any, weights: Any) -> object:
        return uncertainty_maps(ModelOutput(logits, expert_logits, weights), temperature)

    return maps


def _maps_shapes(output: Any) -> list[tuple[int, ...]]:
    return [
        tuple(output.logits.shape),
        tuple(output.expert_logits.shape),
        tuple(output.gate_weights.shape),
    ]


def _peak_bytes(model: Any, images: Any, traced: int) -> tuple[int, str]:
    import torch

    from moe_perception.benchmark.flops import measured_peak_bytes

    if images.device.type == "cuda":
        with torch.inference_mode():
            return measured_peak_bytes(partial(model, images), images.device), "cuda-allocator"
    return traced, "traced-live-tensors"


@dataclass
class _Run:
    """Mutable state of one run: rows per section and the machine-level facts."""

    config: BenchmarkConfig
    device: Any
    dtype: Any
    results: dict[str, Any] = field(default_factory=dict)
    compiled_maps: Any = None

    def section(self, name: str) -> list[dict[str, Any]]:
        return self.results.setdefault(name, [])

    def maps_compiled(self) -> Any:
        """``uncertainty_maps`` under torch.compile, shared by all blocks (or ``None``)."""
        if "compile" not in self.config.speedups:
            return None
        if self.compiled_maps is None:
            import torch

            from moe_perception.uncertainty import uncertainty_maps

            self.compiled_maps = torch.compile(uncertainty_maps)
        return self.compiled_maps


def machine_info(device: Any) -> dict[str, Any]:
    """CPU model, cores, accelerator, library versions, threads and load."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(device),
    }
    try:
        info["load_average_1_5_15"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _matmul(run: _Run, where: str) -> float:
    from moe_perception.benchmark.flops import matmul_flops_per_second

    flops = matmul_flops_per_second(run.device, run.dtype)
    run.section("matmul").append({"when": where, "flops_per_second": flops})
    return flops


def _bench_block(run: _Run, arch: ArchName, size: tuple[int, int], models: _Models) -> None:
    """Every contender and the maps of each MoE at one architecture and size."""
    import torch

    from moe_perception.uncertainty import uncertainty_maps

    config = run.config
    height, width = network_size(size)
    generator = torch.Generator().manual_seed(config.seed)
    images = torch.randn(1, 3, height, width, generator=generator).to(run.device, run.dtype)
    matmul = _matmul(run, f"{arch} {size_name(size)}")
    contenders = {
        variant_label(v, config.num_experts, config.mc_samples): (
            v,
            models.build(v, config.num_experts, config.mc_samples),
        )
        for v in config.variants
    }
    last: dict[str, Any] = {}

    def forward(label: str, model: Any) -> None:
        last[label] = model(images)

    def maps(label: str, function: Callable[..., object] = uncertainty_maps) -> None:
        function(last[label])

    calls: dict[str, Callable[[], object]] = {
        label: partial(forward, label, model) for label, (_, model) in contenders.items()
    }
    moe_labels = [label for label, (v, _) in contenders.items() if v.startswith("moe-")]
    calls.update({f"maps:{label}": partial(maps, label) for label in moe_labels})
    compiled = run.maps_compiled()
    if compiled is not None:
        # Compiled for each new shape during the warm-up round, which is not timed.
        calls.update({f"compiled:{label}": partial(maps, label, compiled) for label in moe_labels})
    _log(f"{arch} {size_name(size)} (network {height}x{width}): {len(calls)} contenders")
    with torch.inference_mode():
        timings = _time(run, calls)
    rows = run.section("forward")
    for label, (variant, model) in contenders.items():
        meta = models.build(variant, config.num_experts, config.mc_samples, meta=True)
        cost = _cost(meta, [tuple(images.shape)])
        peak, method = _peak_bytes(model, images, cost.peak_bytes)
        timing = timings[label]
        rows.append(
            {
                "arch": arch,
                "size": size_name(size),
                "input_hw": [height, width],
                "model": label,
                "variant": variant,
                "batch": 1,
                **timing.to_dict(),
                "flops": cost.flops,
                "flops_per_second": cost.flops / timing.best,
                "matmul_flops_per_second": matmul,
                "matmul_fraction": cost.flops / timing.best / matmul,
                "peak_bytes": peak,
                "peak_method": method,
                "parameters": _parameters(model),
            }
        )
    maps_rows = run.section("maps")
    for label in moe_labels:
        output = last[label]
        cost = _cost(_maps_function(), _maps_shapes(output))
        maps_timing = timings[f"maps:{label}"]
        maps_rows.append(
            {
                "arch": arch,
                "size": size_name(size),
                "model": label,
                **maps_timing.to_dict(),
                "forward_best_s": timings[label].best,
                "share": maps_timing.best / timings[label].best,
                "peak_bytes": cost.peak_bytes,
                "output_bytes": sum(
                    t.numel() * t.element_size() for t in (output.logits, output.expert_logits)
                ),
            }
        )
        if compiled is not None:
            compiled_timing = timings[f"compiled:{label}"]
            maps_rows[-1]["compiled"] = compiled_timing.to_dict()
            maps_rows[-1]["compiled_share"] = compiled_timing.best / timings[label].best
    last.clear()


def _time(run: _Run, calls: dict[str, Callable[[], object]]) -> dict[str, Any]:
    from moe_perception.benchmark.timing import time_interleaved

    config = run.config
    return time_interleaved(
        calls,
        repeats=config.repeats,
        budget_s=config.budget_s,
        device=run.device,
        single_call_s=config.single_call_s,
    )


def _scaling_experts(run: _Run, models: _Models) -> None:
    import torch

    config = run.config
    height, width = network_size(config.scaling_size)
    images = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    images = images.to(run.device, run.dtype)
    built = {
        k: (models.build("moe-simple", k, 2), models.build("ensemble", k, 2))
        for k in config.scaling_experts
    }
    calls: dict[str, Callable[[], object]] = {}
    for k, (moe, ensemble) in built.items():
        calls[f"moe-k{k}"] = partial(moe, images)
        calls[f"ensemble-k{k}"] = partial(ensemble, images)
    _log(f"scaling with K {config.scaling_experts} at {size_name(config.scaling_size)}")
    with torch.inference_mode():
        timings = _time(run, calls)
    for k, (moe, _) in built.items():
        cost = _cost(models.build("moe-simple", k, 2, meta=True), [tuple(images.shape)])
        ensemble_cost = _cost(models.build("ensemble", k, 2, meta=True), [tuple(images.shape)])
        peak, method = _peak_bytes(moe, images, cost.peak_bytes)
        moe_t, ens_t = timings[f"moe-k{k}"], timings[f"ensemble-k{k}"]
        run.section("scaling_experts").append(
            {
                "arch": config.scaling_arch,
                "size": size_name(config.scaling_size),
                "num_experts": k,
                "moe": moe_t.to_dict(),
                "ensemble": ens_t.to_dict(),
                "moe_over_ensemble": moe_t.best / ens_t.best,
                "flops": cost.flops,
                "ensemble_flops": ensemble_cost.flops,
                "peak_bytes": peak,
                "peak_method": method,
            }
        )


def _scaling_batch(run: _Run, models: _Models) -> None:
    import torch

    from moe_perception.uncertainty import uncertainty_maps

    config = run.config
    height, width = network_size(config.scaling_size)
    moe = models.build("moe-simple", config.num_experts, 2)
    generator = torch.Generator().manual_seed(2)
    inputs = {
        b: torch.randn(b, 3, height, width, generator=generator).to(run.device, run.dtype)
        for b in config.scaling_batches
    }

    def step(images: Any) -> object:
        return uncertainty_maps(moe(images))

    calls = {f"batch-{b}": partial(step, images) for b, images in inputs.items()}
    _log(f"scaling with cameras {config.scaling_batches} at {size_name(config.scaling_size)}")
    with torch.inference_mode():
        timings = _time(run, calls)
    maps = _maps_function()
    meta_moe = models.build("moe-simple", config.num_experts, 2, meta=True)

    def traced(images: Any) -> object:
        output = meta_moe(images)
        return maps(output.logits, output.expert_logits, output.gate_weights)

    for b, images in inputs.items():
        timing = timings[f"batch-{b}"]
        cost = _cost(traced, [tuple(images.shape)])
        peak, method = _peak_bytes(step, images, cost.peak_bytes)
        run.section("scaling_batch").append(
            {
                "arch": config.scaling_arch,
                "size": size_name(config.scaling_size),
                "batch": b,
                "what": "MoE forward + all maps",
                **timing.to_dict(),
                "per_camera_s": timing.best / b,
                "frames_per_second": b / timing.best,
                "flops": cost.flops,
                "peak_bytes": peak,
                "peak_method": method,
            }
        )


def _speedups(run: _Run, models: _Models) -> None:
    """MoE forward + all maps at the scaling size: eager against the speed-ups."""
    import copy

    import torch

    from moe_perception.benchmark.onnx_export import WithUncertainty

    config = run.config
    size = config.scaling_size
    height, width = network_size(size)
    images = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(3))
    moe = models.build("moe-simple", config.num_experts, 2)
    wrapper = WithUncertainty(moe, head="logits").eval().to(run.device, run.dtype)
    images = images.to(run.device, run.dtype)
    calls: dict[str, Callable[[], object]] = {"eager": partial(wrapper, images)}
    notes: dict[str, Any] = {}
    if "channels-last" in config.speedups:
        last_model = copy.deepcopy(wrapper).to(memory_format=torch.channels_last)
        last_images = images.contiguous(memory_format=torch.channels_last)
        calls["channels-last"] = partial(last_model, last_images)
    if "fp16" in config.speedups:
        if run.device.type == "cuda" and run.dtype != torch.float16:
            half = copy.deepcopy(wrapper).half()  # a copy: the eager contender stays fp32
            calls["fp16"] = partial(half, images.half())
        else:
            notes["fp16"] = "skipped: needs CUDA (and a float32 main run)"
    if "compile" in config.speedups:
        start = time.perf_counter()
        compiled = torch.compile(wrapper)
        with torch.inference_mode():
            compiled(images)
        notes["compile_seconds"] = time.perf_counter() - start
        calls["torch.compile"] = partial(compiled, images)
    if "onnxruntime" in config.speedups:
        _add_onnx(run, wrapper, images, calls, notes)
    _log(f"speed-ups {list(calls)} at {size_name(size)}")
    with torch.inference_mode():
        timings = _time(run, calls)
    eager = timings["eager"].best
    for name, timing in timings.items():
        run.section("speedups").append(
            {
                "arch": config.scaling_arch,
                "size": size_name(size),
                "what": "MoE (simple gate) forward + all maps",
                "method": name,
                **timing.to_dict(),
                "speedup_over_eager": eager / timing.best,
            }
        )
    run.results["speedup_notes"] = notes


def _add_onnx(
    run: _Run,
    wrapper: Any,
    images: Any,
    calls: dict[str, Callable[[], object]],
    notes: dict[str, Any],
) -> None:
    import torch

    from moe_perception.benchmark.onnx_export import (
        export_onnx,
        onnx_session,
        parity,
        run_onnx,
        torch_outputs,
    )

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        notes["onnxruntime"] = "skipped: onnxruntime is not installed (the onnx extra)"
        return
    if run.device.type != "cpu" or run.dtype != torch.float32:
        notes["onnxruntime"] = "skipped: measured on the CPU in float32 only"
        return
    folder = Path(run.config.onnx_dir or tempfile.mkdtemp(prefix="moe_onnx_"))
    path = folder / f"moe_{run.config.scaling_arch}_{images.shape[2]}x{images.shape[3]}.onnx"
    start = time.perf_counter()
    try:
        export_onnx(wrapper.model, path, (images.shape[2], images.shape[3]), head="logits")
    except Exception as error:  # noqa: BLE001 - report, do not lose the other results
        notes["onnxruntime"] = f"export failed: {type(error).__name__}: {error}"
        return
    notes["onnx_export_seconds"] = time.perf_counter() - start
    notes["onnx_file_bytes"] = path.stat().st_size
    notes["onnx_file"] = str(path)
    session = onnx_session(path, torch.get_num_threads())
    array = images.cpu().numpy()
    reference = torch_outputs(wrapper, images)
    notes["onnx_parity_max_abs_diff"] = parity(reference, run_onnx(session, array))
    calls["onnxruntime"] = partial(run_onnx, session, array)


def _node(run: _Run) -> None:
    path = run.config.node_results
    if not path:
        return
    try:
        run.results["node"] = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        run.results["node"] = {"error": f"cannot read {path}: {error}"}


def node_summary(node: Any) -> dict[str, float] | None:
    """Medians and the end-to-end ratio from ``benchmarks/node_latency.py``'s report.

    The ratio is the node's end-to-end median over the bare ``Segmenter`` median
    (inference plus every map), the issue's "bare inference plus maps"; from the rounds
    that paired one bare call with one node round trip where the report has them.
    """
    if not isinstance(node, dict):
        return None
    try:
        bare_calls = node.get("paired", node["bare"])
        bare = float(bare_calls["segmenter_ms"]["median"])
        end_to_end = float(node["node_end_to_end_ms"]["median"])
    except (KeyError, TypeError, ValueError):
        return None
    summary = {"segmenter_ms": bare, "node_end_to_end_ms": end_to_end}
    rendered = node["bare"].get("segmenter_and_render_ms", {}).get("median")
    if isinstance(rendered, int | float):
        summary["segmenter_and_render_ms"] = float(rendered)
    summary["end_to_end_ratio"] = end_to_end / bare
    return summary


def _find_ratio(node: Any) -> float | None:
    """The node's end-to-end over bare-inference-plus-maps ratio, if its report has one."""
    summary = node_summary(node)
    if summary is not None:
        return summary["end_to_end_ratio"]
    if not isinstance(node, dict):
        return None
    value = node.get("end_to_end_ratio")
    return float(value) if isinstance(value, int | float) else None


def _target(name: str, value: float | None, limit: float, below: bool, where: str) -> dict:
    met = None if value is None else (value <= limit if below else value >= limit)
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "comparison": "<=" if below else ">=",
        "met": met,
        "where": where,
    }


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each at the headline size (640x480) and at its worst."""
    targets: list[dict[str, Any]] = []
    headline = size_name(HEADLINE_SIZE)
    forward = results.get("forward", [])
    best = {(r["arch"], r["size"], r["model"]): r["best_s"] for r in forward}
    for row in results.get("maps", []):
        where = f"{row['arch']} {row['size']} {row['model']}"
        targets.append(
            _target("all maps / MoE forward", row["share"], TARGET_MAPS_SHARE, True, where)
        )
        if "compiled_share" in row:
            name = "all maps (torch.compile) / MoE forward"
            targets.append(_target(name, row["compiled_share"], TARGET_MAPS_SHARE, True, where))
    for (arch, size, model), seconds in best.items():
        if model.startswith("moe-simple-"):
            k = model.rsplit("-k", 1)[1]
            ensemble = best.get((arch, size, f"ensemble-k{k}"))
            if ensemble:
                targets.append(
                    _target(
                        f"MoE K={k} / ensemble of its experts",
                        seconds / ensemble,
                        TARGET_MOE_OVER_ENSEMBLE,
                        True,
                        f"{arch} {size}",
                    )
                )
    for row in forward:
        if row["size"] == headline and row["variant"] == "moe-simple":
            targets.append(
                _target(
                    "MoE forward FLOP/s / matmul FLOP/s",
                    row["matmul_fraction"],
                    TARGET_MATMUL_FRACTION,
                    False,
                    f"{row['arch']} {row['size']}",
                )
            )
    if "node" in results:
        targets.append(
            _target(
                "node end-to-end / (bare inference + maps)",
                _find_ratio(results["node"]),
                TARGET_NODE_OVERHEAD,
                True,
                f"node on {results['node'].get('frames', 'its frames')} (node_latency.py)",
            )
        )
    return targets


def run_benchmark(config: BenchmarkConfig) -> dict[str, Any]:
    """Run everything ``config`` asks for; the JSON-ready results.

    Returns:
        ``{"machine", "config", "forward", "maps", "matmul", "scaling_experts",
        "scaling_batch", "speedups", "speedup_notes", "node", "targets", ...}``.
    """
    import torch

    from moe_perception.segmenter import resolve_device

    device = resolve_device(config.device)
    if config.fp16 and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device")
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, device, torch.float16 if config.fp16 else torch.float32)
    finally:
        torch.set_num_threads(threads)


def _run(config: BenchmarkConfig, device: Any, dtype: Any) -> dict[str, Any]:
    import torch

    torch.manual_seed(config.seed)
    started = time.time()
    run = _Run(config, device, dtype)
    run.results["machine"] = machine_info(device)
    run.results["config"] = asdict(config)
    scaling_k = max((*config.scaling_experts, config.num_experts))
    for arch in config.archs:
        _log(f"building {arch} experts")
        experts = config.num_experts if arch != config.scaling_arch else scaling_k
        models = _Models(arch, experts, device, dtype)
        for size in config.sizes:
            _bench_block(run, arch, size, models)
        if arch == config.scaling_arch:
            _scaling_parts(run, models)
        del models
    if config.scaling_arch not in config.archs and _wants_scaling(config):
        _scaling_parts(run, _Models(config.scaling_arch, scaling_k, device, dtype))
    if device.type == "cuda":
        _cameras_gpu(run)
    _node(run)
    run.results["targets"] = evaluate_targets(run.results)
    run.results["machine"]["load_average_at_end"] = list(os.getloadavg())
    run.results["seconds"] = time.time() - started
    return run.results


def _wants_scaling(config: BenchmarkConfig) -> bool:
    return bool(config.scaling_experts or config.scaling_batches or config.speedups)


def _scaling_parts(run: _Run, models: _Models) -> None:
    if run.config.scaling_experts:
        _scaling_experts(run, models)
    if run.config.scaling_batches:
        _scaling_batch(run, models)
    if run.config.speedups:
        _speedups(run, models)


def _cameras_gpu(run: _Run) -> None:
    """Six cameras at 1920x1208 in one fp16 batch, channels-last, on CUDA: frames/s."""
    import torch

    from moe_perception.benchmark.flops import measured_peak_bytes
    from moe_perception.uncertainty import uncertainty_maps

    config = run.config
    models = _Models(config.scaling_arch, config.num_experts, run.device, torch.float16)
    moe = models.build("moe-simple", config.num_experts, 2).to(memory_format=torch.channels_last)
    height, width = network_size((1920, 1208))
    images = torch.randn(6, 3, height, width, device=run.device, dtype=torch.float16)
    images = images.contiguous(memory_format=torch.channels_last)

    def step() -> object:
        return uncertainty_maps(moe(images))

    with torch.inference_mode():
        timing = _time(run, {"six": step})["six"]
        peak = measured_peak_bytes(step, run.device)
    run.section("cameras_gpu").append(
        {
            "arch": config.scaling_arch,
            "size": "1920x1208",
            "batch": 6,
            "what": "MoE forward + all maps, fp16, channels-last",
            **timing.to_dict(),
            "frames_per_second": 6 / timing.best,
            "peak_bytes": peak,
        }
    )


# --------------------------------------------------------------------------- reporting


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.1f}"


def _mib(count: float) -> str:
    return f"{count / 2**20:,.0f}"


def format_markdown(results: dict[str, Any]) -> str:
    """Render the results as markdown tables (what the command prints and writes)."""
    lines: list[str] = ["# moe-perception benchmark", ""]
    machine = results.get("machine", {})
    load = machine.get("load_average_1_5_15")
    lines += [
        f"Machine: {machine.get('cpu')}, {machine.get('cpu_count')} cores, "
        f"torch {machine.get('torch')} ({machine.get('torch_threads')} threads, "
        f"{machine.get('cpu_capability')}), device {machine.get('device')}"
        + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        + f", onnxruntime {machine.get('onnxruntime')}.",
        f"Load average (1, 5, 15 min) at start {load}, at end "
        f"{machine.get('load_average_at_end')}; run took {results.get('seconds', 0):.0f} s.",
        "Times are the best of the timed calls (interleaved rounds; medians in the JSON).",
        "",
    ]
    forward = results.get("forward", [])
    if forward:
        lines += [
            "## Forward pass (batch 1)",
            "",
            "| arch | size | model | best ms | median ms | calls | GFLOP | GFLOP/s "
            "| of matmul | peak MiB | x ensemble |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        best = {(r["arch"], r["size"], r["model"]): r["best_s"] for r in forward}
        for r in forward:
            k = r["model"].rsplit("-k", 1)[1] if "-k" in r["model"] else None
            ensemble = best.get((r["arch"], r["size"], f"ensemble-k{k}")) if k else None
            ratio = f"{r['best_s'] / ensemble:.2f}" if ensemble else "-"
            lines.append(
                f"| {r['arch']} | {r['size']} | {r['model']} | {_ms(r['best_s'])} "
                f"| {_ms(r['median_s'])} | {len(r['samples_s'])} | {r['flops'] / 1e9:,.1f} "
                f"| {r['flops_per_second'] / 1e9:,.1f} | {r['matmul_fraction']:.0%} "
                f"| {_mib(r['peak_bytes'])} | {ratio} |"
            )
        matmul = results.get("matmul", [])
        if matmul:
            values = [m["flops_per_second"] / 1e9 for m in matmul]
            lines += [
                "",
                f"Matrix-multiply (2048², {('fp16' if results['config'].get('fp16') else 'fp32')})"
                f" measured before each block: {', '.join(f'{v:,.0f}' for v in values)} GFLOP/s.",
                "Peak memory: tensors alive at once during the call (activations and outputs, "
                "not weights); traced on the CPU, the allocator's peak on CUDA.",
            ]
        lines.append("")
    maps = results.get("maps", [])
    if maps:
        compiled = all("compiled_share" in r for r in maps)
        lines += [
            "## All uncertainty maps, as a share of the MoE forward",
            "",
            "| arch | size | model | maps best ms | forward best ms | share | maps peak MiB |"
            + (" compiled ms | compiled share |" if compiled else ""),
            "|---|---|---|--:|--:|--:|--:|" + ("--:|--:|" if compiled else ""),
        ]
        for r in maps:
            lines.append(
                f"| {r['arch']} | {r['size']} | {r['model']} | {_ms(r['best_s'])} "
                f"| {_ms(r['forward_best_s'])} | {r['share']:.1%} | {_mib(r['peak_bytes'])} |"
                + (
                    f" {_ms(r['compiled']['best_s'])} | {r['compiled_share']:.1%} |"
                    if compiled
                    else ""
                )
            )
        lines.append("")
    scaling = results.get("scaling_experts", [])
    if scaling:
        lines += [
            f"## Scaling with K ({scaling[0]['arch']}, {scaling[0]['size']})",
            "",
            "| K | MoE best ms | ensemble best ms | MoE / ensemble | MoE GFLOP "
            "| ensemble GFLOP | MoE peak MiB |",
            "|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in scaling:
            lines.append(
                f"| {r['num_experts']} | {_ms(r['moe']['best_s'])} "
                f"| {_ms(r['ensemble']['best_s'])} | {r['moe_over_ensemble']:.2f} "
                f"| {r['flops'] / 1e9:,.1f} | {r['ensemble_flops'] / 1e9:,.1f} "
                f"| {_mib(r['peak_bytes'])} |"
            )
        lines.append("")
    batch = results.get("scaling_batch", [])
    if batch:
        lines += [
            f"## Scaling with cameras ({batch[0]['arch']}, {batch[0]['size']}, "
            "MoE forward + all maps)",
            "",
            "| cameras | best ms | ms per camera | frames/s | peak MiB |",
            "|--:|--:|--:|--:|--:|",
        ]
        for r in batch:
            lines.append(
                f"| {r['batch']} | {_ms(r['best_s'])} | {_ms(r['per_camera_s'])} "
                f"| {r['frames_per_second']:.2f} | {_mib(r['peak_bytes'])} |"
            )
        lines.append("")
    for r in results.get("cameras_gpu", []):
        lines += [
            "## Six cameras on the GPU",
            "",
            f"{r['what']} at {r['size']}, batch {r['batch']}: {_ms(r['best_s'])} ms, "
            f"{r['frames_per_second']:.1f} frames/s, peak {_mib(r['peak_bytes'])} MiB.",
            "",
        ]
    speedups = results.get("speedups", [])
    if speedups:
        lines += [
            f"## Making it fast ({speedups[0]['arch']}, {speedups[0]['size']}, "
            f"{speedups[0]['what']})",
            "",
            "| method | best ms | median ms | speed-up over eager |",
            "|---|--:|--:|--:|",
        ]
        for r in speedups:
            lines.append(
                f"| {r['method']} | {_ms(r['best_s'])} | {_ms(r['median_s'])} "
                f"| {r['speedup_over_eager']:.2f}x |"
            )
        notes = results.get("speedup_notes", {})
        parity_values = notes.get("onnx_parity_max_abs_diff")
        if parity_values:
            text = ", ".join(f"{k} {v:.2e}" for k, v in parity_values.items())
            lines += ["", f"ONNX parity, largest absolute difference: {text}."]
        for key in ("onnx_export_seconds", "compile_seconds"):
            if key in notes:
                lines.append(f"{key.replace('_', ' ')}: {notes[key]:.1f}.")
        for key, value in notes.items():
            if isinstance(value, str) and key != "onnx_file":
                lines.append(f"{key}: {value}.")
        lines.append("")
    if "node" in results:
        lines += ["## Node end-to-end (benchmarks/node_latency.py)", ""]
        summary = node_summary(results["node"])
        if summary is None:
            lines += ["No end-to-end figures in the node report (see the JSON).", ""]
        else:
            lines += [
                "| median ms | value |",
                "|---|--:|",
                *(
                    f"| {key} | {value:,.2f} |"
                    if key.endswith("ratio")
                    else f"| {key} | {value:,.1f} |"
                    for key, value in summary.items()
                ),
                "",
            ]
    targets = results.get("targets", [])
    if targets:
        lines += [
            "## Targets",
            "",
            "| target | where | measured | limit | met |",
            "|---|---|--:|--:|---|",
        ]
        for t in targets:
            value = "-" if t["value"] is None else f"{t['value']:.3f}"
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            lines.append(
                f"| {t['target']} | {t['where']} | {value} | {t['comparison']} {t['limit']} "
                f"| {met} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_results(results: dict[str, Any], out: str | Path, markdown: str | Path | None) -> Path:
    """Write the JSON (and the markdown next to it unless ``markdown`` says where)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    md = Path(markdown) if markdown else out.with_suffix(".md")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(format_markdown(results))
    return md
