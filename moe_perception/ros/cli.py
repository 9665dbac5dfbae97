"""Subcommands of ``moe-perception`` for this part (argparse only; handlers import lazily).

Nothing here imports rclpy: ``moe-perception`` must start, and say what is missing, on a
machine without ROS.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUT = "demo_out"


def _demo(args: argparse.Namespace) -> int:
    try:
        import rclpy  # noqa: F401 - only to say clearly that ROS is missing
    except ImportError:
        print(
            "moe-perception demo: error: ROS 2 (rclpy) is not installed; install it with "
            "`python3 -m pip install -e '.[ros]'` or source a ROS 2 installation",
            file=sys.stderr,
        )
        return 2
    from moe_perception.resources import default_model_path
    from moe_perception.ros.demo import SAMPLE_DIR, DemoError, run_demo

    bag = Path(args.bag) if args.bag else SAMPLE_DIR
    if not bag.exists():
        raise FileNotFoundError(
            f"the demo bag is missing at {bag}"
            + ("" if args.bag else " (the package's sample); pass --bag PATH")
        )
    model = Path(args.model) if args.model else default_model_path()
    try:
        result = run_demo(
            model=model,
            bag=bag,
            out_dir=Path(args.out),
            topic=args.topic,
            device=args.device,
            max_frames=args.max_frames,
            frame_timeout=args.timeout,
        )
    except DemoError as error:
        print(f"moe-perception demo: error: {error}", file=sys.stderr)
        return 1
    print(
        f"demo: wrote {len(result.mosaics)} mosaics ({result.mosaics[0].name} ... "
        f"{result.mosaics[-1].name}) and {result.summary.name} to {result.out_dir.resolve()}"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add this part's subcommands to the ``moe-perception`` parser."""
    demo = commands.add_parser(
        "demo",
        help="run the ROS 2 node on the shipped sample bag and write mosaics to demo_out/",
        description=(
            "Start the segmenter node, replay a short recorded sequence into it over DDS "
            "(no ROS CLI needed), record every output and write one mosaic PNG per frame "
            "and summary.json."
        ),
    )
    demo.add_argument("--model", help="checkpoint (default: the shipped default model)")
    demo.add_argument("--bag", help="rosbag2 folder to replay (default: the shipped sample)")
    demo.add_argument("--topic", help="image topic in the bag (default: its first image topic)")
    demo.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    demo.add_argument(
        "--max-frames", type=int, default=12, help="replay at most this many frames (12)"
    )
    demo.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for one frame's outputs"
    )
    demo.set_defaults(handler=_demo)
