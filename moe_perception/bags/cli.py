"""Subcommands of ``moe-perception`` for this part (argparse only; handlers import lazily)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moe_perception.bags.bagfile import BagFormat


def _add_bag_format(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output bag")
    group.add_argument(
        "--storage", choices=("mcap", "sqlite3"), default="mcap", help="storage (default mcap)"
    )
    group.add_argument(
        "--bag-version",
        type=int,
        choices=(8, 9),
        default=8,
        help="rosbag2 metadata version; 8 (default) is also read by Humble",
    )
    group.add_argument(
        "--compression",
        choices=("auto", "none", "zstd"),
        default="auto",
        help="zstd chunk compression (mcap only); auto: zstd for mcap, none for sqlite3",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _bag_format(args: argparse.Namespace) -> BagFormat:
    from moe_perception.bags.bagfile import BagFormat

    return BagFormat(storage=args.storage, version=args.bag_version, compression=args.compression)


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def _camvid_to_bag(args: argparse.Namespace) -> int:
    from moe_perception.bags.camvid import CamvidBagOptions, camvid_to_bag, parse_spans

    options = CamvidBagOptions(
        sequences=parse_spans(args.sequence),
        split=args.split,
        image_topic=args.topic,
        label_topic=args.labels_topic,
        frame_id=args.frame_id,
        start_time_s=args.start_time,
        period_s=args.period,
        bag_format=_bag_format(args),
    )
    summary = camvid_to_bag(args.camvid_root, args.out_bag, options, progress=_progress(args))
    print(summary.describe())
    return 0


def _a2d2_to_bag(args: argparse.Namespace) -> int:
    from moe_perception.bags.a2d2 import A2D2BagOptions, a2d2_to_bag

    options = A2D2BagOptions(
        scenes=tuple(args.scenes) if args.scenes else None,
        cameras=tuple(args.cameras) if args.cameras else None,
        sensor_config=args.sensor_config,
        camera_info=not args.no_camera_info,
        labels=not args.no_labels,
        label_ids=args.label_ids,
        tai_to_utc=args.tai_to_utc,
        namespace=args.namespace,
        frame_prefix=args.frame_prefix,
        bag_format=_bag_format(args),
    )
    summary = a2d2_to_bag(args.a2d2_root, args.out_bag, options, progress=_progress(args))
    print(summary.describe())
    return 0


def _process_bag(args: argparse.Namespace) -> int:
    from moe_perception.bags.process import ProcessOptions, process_bag

    options = ProcessOptions(
        checkpoint=args.checkpoint,
        device=args.device,
        fp16=args.fp16,
        topics=tuple(args.topics) if args.topics else None,
        outputs=tuple(args.outputs) if args.outputs else None,
        confidence_map=args.confidence_map,
        colormap=args.colormap,
        alpha=args.alpha,
        resolution=args.resolution,
        copy_inputs=not args.no_inputs,
        bag_format=_bag_format(args),
    )
    report = process_bag(args.in_bag, args.out_bag, options, progress=_progress(args))
    print(report.describe())
    return 0


def _play(args: argparse.Namespace) -> int:
    from moe_perception.bags.play import PlayOptions, play

    options = PlayOptions(
        rate=args.rate,
        loop=args.loop,
        topics=tuple(args.topics) if args.topics else None,
        delay_s=args.delay,
        wait_for_subscribers_s=args.wait_for_subscribers,
    )
    published = play(args.bag, options)
    print(f"published {published} messages from {args.bag}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add this part's subcommands to the ``moe-perception`` parser."""
    camvid = commands.add_parser(
        "camvid-to-bag",
        help="write CamVid sequences (images and labels) as a rosbag2",
        description=(
            "Write frames of CamVid sequences, in file-name order, as a rosbag2: rgb8 "
            "images and mono8 class-id labels (void = 255), one period apart."
        ),
    )
    camvid.add_argument("camvid_root", type=Path, help="CamVid folder (train/, testannot/, ...)")
    camvid.add_argument("out_bag", type=Path, help="new bag folder (must not exist)")
    camvid.add_argument(
        "--sequence",
        action="append",
        required=True,
        metavar="NAME[:START[:COUNT]]",
        help="frames START..START+COUNT-1 of a sequence (repeat for more, written in turn), "
        "e.g. Seq05VD:77:6",
    )
    camvid.add_argument(
        "--split", choices=("train", "val", "test"), default="test", help="default test"
    )
    camvid.add_argument("--topic", default="/camera/image_raw", help="image topic")
    camvid.add_argument(
        "--labels-topic",
        default=None,
        help="label topic (default <camera namespace>/labels; '' for none)",
    )
    camvid.add_argument("--frame-id", default="camera_optical_frame", help="header frame id")
    camvid.add_argument(
        "--start-time",
        type=float,
        default=1_700_000_000.0,
        help="stamp of the first frame, seconds since the epoch (default 1700000000)",
    )
    camvid.add_argument(
        "--period", type=float, default=1.0, help="seconds between frames (default 1)"
    )
    _add_bag_format(camvid)
    camvid.set_defaults(handler=_camvid_to_bag)

    a2d2 = commands.add_parser(
        "a2d2-to-bag",
        help="write A2D2 semantic-segmentation scenes as a rosbag2",
        description=(
            "Write the camera images of A2D2's semantic-segmentation scenes as a rosbag2, "
            "time-ordered by cam_tstamp: rgb8 images, mono8 class-id labels and, with the "
            "sensor configuration, CameraInfo."
        ),
    )
    a2d2.add_argument(
        "a2d2_root", type=Path, help="folder holding class_list.json and the scene folders"
    )
    a2d2.add_argument("out_bag", type=Path, help="new bag folder (must not exist)")
    a2d2.add_argument("--scenes", nargs="+", help="scene folder names (default: all)")
    a2d2.add_argument(
        "--cameras", nargs="+", help="cameras, e.g. front_center side_left (default: all)"
    )
    a2d2.add_argument(
        "--sensor-config",
        type=Path,
        default=None,
        help="cams_lidars.json (default: A2D2_ROOT/cams_lidars.json if present)",
    )
    a2d2.add_argument("--no-camera-info", action="store_true", help="write no CameraInfo")
    a2d2.add_argument("--no-labels", action="store_true", help="write no label topics")
    a2d2.add_argument(
        "--label-ids",
        choices=("paper38", "coarse", "colors"),
        default="paper38",
        help="label ids: the 38 A2D2 categories (default), 12 coarse classes, or the "
        "index of the colour in class_list.json",
    )
    a2d2.add_argument(
        "--tai-to-utc",
        action="store_true",
        help="subtract 37 s: cam_tstamp is TAI, ROS time is usually UTC",
    )
    a2d2.add_argument("--namespace", default="", help="topic prefix, e.g. /a2d2 (default: none)")
    a2d2.add_argument(
        "--frame-prefix",
        default="",
        help="prefix of the frame ids <prefix>cam_<name>_optical_frame",
    )
    _add_bag_format(a2d2)
    a2d2.set_defaults(handler=_a2d2_to_bag)

    process = commands.add_parser(
        "process-bag",
        help="run the segmenter over every image topic of a bag",
        description=(
            "Run the segmenter over every colour image topic of a bag and write a bag with "
            "the inputs and every output the node publishes (same topics and types). Where "
            "a camera has a <namespace>/labels topic with the model's classes, also write "
            "per-frame and overall mIoU and pixel accuracy to OUT_BAG/metrics.json."
        ),
    )
    process.add_argument("in_bag", type=Path, help="input bag folder")
    process.add_argument("out_bag", type=Path, help="new bag folder (must not exist)")
    process.add_argument(
        "--checkpoint", type=Path, default=None, help="model (default: the shipped model)"
    )
    process.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    process.add_argument("--fp16", action="store_true", help="half precision on CUDA")
    process.add_argument(
        "--topics", nargs="+", help="image topics to segment (default: every colour image topic)"
    )
    process.add_argument(
        "--outputs", nargs="+", help="image outputs to write (default: all the node publishes)"
    )
    process.add_argument(
        "--confidence-map",
        default="predictive_entropy",
        help="map driving confidence and uncertainty_color (default predictive_entropy)",
    )
    process.add_argument(
        "--colormap", choices=("turbo", "gray"), default="turbo", help="default turbo"
    )
    process.add_argument(
        "--alpha", type=float, default=0.5, help="overlay weight of colours (default 0.5)"
    )
    process.add_argument(
        "--resolution",
        choices=("input", "network"),
        default="input",
        help="outputs at each image's size (default) or at the network's input size",
    )
    process.add_argument(
        "--no-inputs", action="store_true", help="write only the outputs, not the input topics"
    )
    _add_bag_format(process)
    process.set_defaults(handler=_process_bag)

    play_parser = commands.add_parser(
        "play",
        help="publish a bag over DDS with its original timing",
        description=(
            "Publish a bag's topics with their recorded timing, for machines without "
            "`ros2 bag play` (the standard tool, which works the same on these bags). "
            "Needs rclpy and the message packages of the bag's types."
        ),
    )
    play_parser.add_argument("bag", type=Path, help="bag folder")
    play_parser.add_argument(
        "--rate", type=float, default=1.0, help="speed factor (default 1: recorded timing)"
    )
    play_parser.add_argument("--loop", action="store_true", help="play again until Ctrl-C")
    play_parser.add_argument("--topics", nargs="+", help="only these topics (default: all)")
    play_parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds to wait before the first message"
    )
    play_parser.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS until every topic has a subscriber (default 0: do not wait)",
    )
    play_parser.set_defaults(handler=_play)
