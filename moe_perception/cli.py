"""The ``moe-perception`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence


def _info(args: argparse.Namespace) -> int:
    from moe_perception.checkpoint import read_checkpoint

    metadata, state = read_checkpoint(args.checkpoint)
    parameters = sum(t.numel() for t in state.values() if t.is_floating_point())
    if args.json:
        print(json.dumps({**json.loads(metadata.to_json()), "parameters": parameters}, indent=2))
        return 0
    arch = metadata.arch
    print(f"checkpoint   {args.checkpoint}")
    print(f"model        {arch.name} ({arch.kind}, encoder {arch.encoder})")
    print(f"experts      {', '.join(metadata.expert_names) or arch.num_experts}")
    print(f"gate         {arch.gate}{' +conv' if arch.gate_conv else ''}")
    print(f"classes      {arch.num_classes}: {', '.join(metadata.class_names)}")
    print(f"input size   {metadata.input_size[0]}x{metadata.input_size[1]} (HxW)")
    print(f"normalise    mean {metadata.mean} std {metadata.std}")
    print(f"temperature  {metadata.temperature:g}")
    print(f"parameters   {parameters:,}")
    for key, value in metadata.provenance.items():
        print(f"{key:<12} {json.dumps(value) if not isinstance(value, str) else value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-perception",
        description="Mixture-of-experts semantic segmentation with one-pass uncertainty.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="print a checkpoint's metadata")
    info.add_argument("checkpoint", help="path of a moe_perception checkpoint (.pt)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(handler=_info)
    # Each part registers its own subcommands; their heavy imports happen in the handlers.
    from moe_perception.bags.cli import register as register_bags
    from moe_perception.benchmark.cli import register as register_benchmark
    from moe_perception.ros.cli import register as register_ros
    from moe_perception.training.cli import register as register_training

    for register in (register_training, register_ros, register_bags, register_benchmark):
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors a user can fix are printed in one line, exit status 2."""
    from moe_perception.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (CheckpointError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"moe-perception {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
