"""Benchmark of the segmenter node against a bare ``Segmenter`` call, in one run.

Not a test. On the same frames (the shipped CamVid sample bag unless ``--bag``), it
measures:

1. ``Segmenter`` alone, and ``Segmenter`` + ``render.frame_outputs`` (the node's work);
2. the node end to end over DDS: publish one frame, wait for all its outputs, repeat,
   each round preceded by a bare ``Segmenter`` call on the same frame, so that the
   ratio compares the two under the same machine conditions (on a shared 2-core VM the
   speed of a whole phase drifts by 10 to 20 %);
3. the node's resident memory while it is sent ``--memory-frames`` frames at ``--rate``
   Hz (the node drops what it cannot process; memory must stay flat).

    python3 benchmarks/node_latency.py --model models/moe_camvid_k2.pt --device cpu

Prints a JSON report (also written to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def summary(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    return {
        "n": len(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "median": round(statistics.median(ordered), 1),
        "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
        "max": round(ordered[-1], 1),
    }


def bare_latency(segmenter: Any, images: list[np.ndarray], repeats: int) -> dict[str, Any]:
    from moe_perception.render import IMAGE_OUTPUTS, frame_outputs, palette_lut

    palette = palette_lut(segmenter.metadata.class_colors)
    segmenter(images[0])  # warm-up
    alone, rendered = [], []
    for i in range(repeats):
        image = images[i % len(images)]
        start = time.perf_counter()
        segmentation = segmenter(image)
        middle = time.perf_counter()
        frame_outputs(image, segmentation, palette, IMAGE_OUTPUTS)
        end = time.perf_counter()
        alone.append((middle - start) * 1000)
        rendered.append((end - start) * 1000)
    return {"segmenter_ms": summary(alone), "segmenter_and_render_ms": summary(rendered)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--bag", help="rosbag2 with the frames (default: the shipped sample)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    parser.add_argument(
        "--size",
        default="640x480",
        help="WxH the frames are resized to before they are sent (the issue's 640x480); "
        "'native' keeps the bag's size",
    )
    parser.add_argument("--latency-frames", type=int, default=48)
    parser.add_argument("--memory-frames", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=50.0, help="Hz of the memory phase")
    parser.add_argument(
        "--dds-profile",
        default=str(Path(__file__).resolve().parents[1] / "config" / "fastdds_large_images.xml"),
        help="Fast DDS XML profile for both sides (default: config/fastdds_large_images.xml)",
    )
    parser.add_argument("--default-dds", action="store_true", help="no Fast DDS profile")
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from moe_perception.render import IMAGE_OUTPUTS, output_topic
    from moe_perception.resources import default_model_path
    from moe_perception.ros.codec import resize_rgb
    from moe_perception.ros.demo import SAMPLE_DIR, read_bag_frames

    model = Path(args.model) if args.model else default_model_path()
    sequence = read_bag_frames(Path(args.bag) if args.bag else SAMPLE_DIR, limit=1000)
    images = [np.ascontiguousarray(frame.image) for frame in sequence.frames]
    if args.size != "native":
        width, height = (int(v) for v in args.size.lower().split("x"))
        images = [resize_rgb(image, (height, width)) for image in images]
    report: dict[str, Any] = {
        "model": str(model),
        "device": args.device,
        "threads": args.threads,
        "frames": f"{len(images)} frames of {sequence.topic}, {images[0].shape[1]}x"
        f"{images[0].shape[0]}",
        "cpu": os.cpu_count(),
        "dds_profile": None if args.default_dds else Path(args.dds_profile).name,
    }
    from moe_perception.segmenter import Segmenter

    print(f"bare Segmenter on {len(images)} frames ...", file=sys.stderr)
    segmenter = Segmenter.from_checkpoint(model, device=args.device)
    report["bare"] = bare_latency(segmenter, images, args.latency_frames)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    topic = "/bench_camera/image_raw"
    with tempfile.TemporaryDirectory(prefix="moe_bench_") as scratch:
        params = Path(scratch) / "params.yaml"
        parameters = {
            "model_path": str(model.resolve()),
            "device": args.device,
            "cpu_threads": args.threads,
            "image_topics": [topic],
            "input_reliability": "reliable",
            "diagnostics_period": 1.0,
        }
        params.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
        environment = dict(os.environ)
        if not args.default_dds:
            # Both participants: the segment that holds a sample is the writer's.
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = args.dds_profile
            environment["FASTDDS_DEFAULT_PROFILES_FILE"] = args.dds_profile
        node_log = (Path(scratch) / "node.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "moe_perception.ros.node", "--ros-args", "-r",
             "__node:=bench_segmenter", "--params-file", str(params)],
            stdout=node_log, stderr=subprocess.STDOUT, env=environment,
        )  # fmt: skip
        context = Context()
        rclpy.init(context=context)
        try:
            node = Node("bench_player", context=context)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            arrivals: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
            ready: list[str] = []

            def record(name: str) -> Any:
                def callback(message: Any) -> None:
                    stamp = message.header.stamp
                    arrivals[(stamp.sec, stamp.nanosec)][name] = time.monotonic()

                return callback

            reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
            for name in IMAGE_OUTPUTS:
                node.create_subscription(Image, output_topic(topic, name), record(name), reliable)
            latched = QoSProfile(
                depth=1,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL,
            )
            node.create_subscription(
                String, "/segmentation/class_info", lambda m: ready.append(m.data), latched
            )
            # The node's own account of each diagnostics period: mean stamp-to-published
            # latency and inference time, to split the overhead into node and delivery.
            node_periods: list[dict[str, float]] = []

            def on_diagnostics(message: DiagnosticArray) -> None:
                for status in message.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if (
                        status.name.endswith(topic)
                        and values.get("latency mean (ms)", "n/a") != "n/a"
                    ):
                        node_periods.append(
                            {
                                "latency": float(values["latency mean (ms)"]),
                                "inference": float(values["inference time mean (ms)"]),
                                "frames": float(values["output rate (Hz)"]),
                            }
                        )

            node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
            publisher = node.create_publisher(Image, topic, reliable)

            def spin_until(done: Any, timeout: float) -> bool:
                deadline = time.monotonic() + timeout
                while not done():
                    if time.monotonic() > deadline or process.poll() is not None:
                        return False
                    executor.spin_once(timeout_sec=0.01)
                return True

            if not spin_until(lambda: ready and publisher.get_subscription_count(), 300):
                raise SystemExit("the node did not start; see its log")
            spin_until(lambda: False, 2.0)  # let discovery settle both ways
            from std_msgs.msg import Header

            from moe_perception.ros.node import image_message

            messages = [
                image_message(image, Header(frame_id=frame.message.header.frame_id))
                for image, frame in zip(images, sequence.frames)
            ]

            print("node end to end ...", file=sys.stderr)
            node_periods.clear()
            end_to_end, paired = [], []
            for i in range(args.latency_frames + 1):
                start = time.perf_counter()
                segmenter(images[i % len(images)])
                bare_ms = (time.perf_counter() - start) * 1000
                message = messages[i % len(messages)]
                message.header.stamp = node.get_clock().now().to_msg()
                key = (message.header.stamp.sec, message.header.stamp.nanosec)
                sent = time.monotonic()
                publisher.publish(message)
                complete = spin_until(lambda key=key: len(arrivals[key]) == len(IMAGE_OUTPUTS), 60)
                if complete and i > 0:  # the first frame warms the node up
                    end_to_end.append((max(arrivals[key].values()) - sent) * 1000)
                    paired.append(bare_ms)
                arrivals.clear()
            report["node_end_to_end_ms"] = summary(end_to_end)
            report["paired"] = {
                "segmenter_ms": summary(paired),
                "node_end_to_end_ms": summary(end_to_end),
                "ratio_of_medians": round(
                    statistics.median(end_to_end) / statistics.median(paired), 3
                ),
                "median_of_ratios": round(
                    statistics.median(e / b for e, b in zip(end_to_end, paired)), 3
                ),
            }
            report["node_overhead_ms"] = round(
                statistics.median(end_to_end) - statistics.median(paired), 1
            )
            spin_until(lambda: False, 1.5)  # the last diagnostics period
            weight = sum(p["frames"] for p in node_periods)
            if weight > 0:
                report["node_reported_ms"] = {
                    key: round(sum(p[key] * p["frames"] for p in node_periods) / weight, 1)
                    for key in ("latency", "inference")
                }

            print(f"memory over {args.memory_frames} frames ...", file=sys.stderr)
            memory = [(0, round(rss_mib(process.pid), 1))]
            period = 1.0 / args.rate
            next_send = time.monotonic()
            answered = 0
            every = max(args.memory_frames // 20, 1)
            for i in range(1, args.memory_frames + 1):
                message = messages[i % len(messages)]
                message.header.stamp = node.get_clock().now().to_msg()
                publisher.publish(message)
                next_send += period
                while time.monotonic() < next_send:
                    executor.spin_once(timeout_sec=max(0.0, next_send - time.monotonic()))
                answered += sum(1 for outputs in arrivals.values() if "labels" in outputs)
                arrivals.clear()
                if i % every == 0:
                    memory.append((i, round(rss_mib(process.pid), 1)))
            report["memory"] = {
                "rate_hz": args.rate,
                "frames_sent": args.memory_frames,
                "frames_answered": answered,
                "rss_mib_by_frames_sent": memory,
                # Allocators and caches settle in the first fifth; growth after that
                # would be a leak.
                "rss_growth_after_first_fifth_mib": round(
                    memory[-1][1] - next(m for n, m in memory if n >= args.memory_frames // 5),
                    1,
                ),
            }
        finally:
            rclpy.try_shutdown(context=context)
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=30)
            node_log.close()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
