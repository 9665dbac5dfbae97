"""``moe-perception benchmark`` (argparse only; the handler imports torch lazily)."""

from __future__ import annotations

import argparse
import sys

DEFAULT_OUT = "benchmarks/results.json"
# What the full run and the --quick smoke run measure unless an option says otherwise.
FULL: dict[str, object] = {
    "archs": ("default", "resnet101"),
    "sizes": ((480, 360), (640, 480), (1920, 1208)),
    "repeats": 5,
    "scaling_size": (640, 480),
    "scaling_experts": (2, 3, 4),
    "batches": (1, 2, 3, 4, 5, 6),
}
QUICK: dict[str, object] = {
    "archs": ("default",),
    "sizes": ((160, 128),),
    "repeats": 1,
    "scaling_size": (160, 128),
    "scaling_experts": (2, 3),
    "batches": (1, 2),
}


def _size(text: str) -> tuple[int, int]:
    """``640x480`` -> (640, 480), width by height."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}"
        ) from None
    return width, height


def _benchmark(args: argparse.Namespace) -> int:
    from moe_perception.benchmark.runner import (
        VARIANTS,
        BenchmarkConfig,
        format_markdown,
        run_benchmark,
        write_results,
    )

    speedups = [s for s in ("channels-last", "onnxruntime") if s not in args.skip]
    if args.compile:
        speedups.append("compile")
    if args.fp16_speedup:
        speedups.append("fp16")
    defaults = QUICK if args.quick else FULL

    def pick(name: str) -> object:
        value = getattr(args, name)
        return defaults[name] if value is None else value

    config = BenchmarkConfig(
        archs=tuple(pick("archs")),
        sizes=tuple(pick("sizes")),
        variants=tuple(args.variants) if args.variants else VARIANTS,
        num_experts=args.experts,
        mc_samples=args.mc_samples,
        repeats=pick("repeats"),
        budget_s=args.budget,
        single_call_s=args.single_call,
        scaling_arch=args.scaling_arch,
        scaling_size=pick("scaling_size"),
        scaling_experts=tuple(pick("scaling_experts")),
        scaling_batches=tuple(pick("batches")),
        speedups=tuple(speedups),
        device=args.device,
        fp16=args.fp16,
        threads=args.threads,
        node_results=args.node_results,
        onnx_dir=args.onnx_dir,
        seed=args.seed,
    )
    results = run_benchmark(config)
    markdown = write_results(results, args.out, args.markdown)
    print(format_markdown(results))
    print(f"wrote {args.out} and {markdown}", file=sys.stderr)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``benchmark`` to the ``moe-perception`` parser."""
    from moe_perception.benchmark.runner import ARCH_NAMES, VARIANTS

    parser = commands.add_parser(
        "benchmark",
        help="time the MoE against its alternatives; print a table, write JSON and markdown",
        description=(
            "Measure, side by side in one run, one expert, the ensemble, the MoE with each "
            "gate and MC dropout, the cost of all uncertainty maps, FLOPs against the "
            "machine's matrix-multiply FLOP/s, peak memory, scaling with K and cameras, and "
            "the speed-ups (channels-last, torch.compile, onnxruntime with parity). Models "
            "are randomly initialised (speed does not depend on weights)."
        ),
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON file ({DEFAULT_OUT})")
    parser.add_argument("--markdown", help="markdown file (default: --out with .md)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, default arch, 1 call: a smoke test"
    )
    parser.add_argument("--archs", nargs="+", choices=ARCH_NAMES, help="default resnet101")
    parser.add_argument(
        "--sizes", nargs="+", type=_size, metavar="WxH", help="480x360 640x480 1920x1208"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, help="all")
    parser.add_argument("--experts", type=int, default=2, help="K of MoE and ensemble (2)")
    parser.add_argument("--mc-samples", type=int, default=10, help="MC dropout passes (10)")
    parser.add_argument("--repeats", type=int, help="timed calls per contender at most (5)")
    parser.add_argument(
        "--budget", type=float, default=4.0, help="seconds of timed calls per contender (4)"
    )
    parser.add_argument(
        "--single-call",
        type=float,
        default=20.0,
        help="a contender whose first call takes this many seconds is timed once (20)",
    )
    parser.add_argument("--scaling-arch", choices=ARCH_NAMES, default="default", help="(default)")
    parser.add_argument("--scaling-size", type=_size, metavar="WxH", help="(640x480)")
    parser.add_argument(
        "--scaling-experts", nargs="*", type=int, metavar="K", help="2 3 4 (none: skip)"
    )
    parser.add_argument(
        "--batches", nargs="*", type=int, metavar="B", help="cameras 1 2 3 4 5 6 (none: skip)"
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("channels-last", "onnxruntime"),
        help="speed-ups not to measure",
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--fp16-speedup", action="store_true", help="also time fp16 (CUDA) in the speed-ups"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cpu)")
    parser.add_argument("--fp16", action="store_true", help="run everything in fp16 (CUDA)")
    parser.add_argument("--threads", type=int, help="torch threads (torch's default)")
    parser.add_argument(
        "--node-results", help="JSON written by benchmarks/node_latency.py, to include"
    )
    parser.add_argument("--onnx-dir", help="keep the exported ONNX file here")
    parser.add_argument("--seed", type=int, default=0, help="random weights and inputs (0)")
    parser.set_defaults(handler=_benchmark)
