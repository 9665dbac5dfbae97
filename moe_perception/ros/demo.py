"""``moe-perception demo``: the node on a recorded sequence, over real DDS, no ROS CLI.

Starts the segmenter node as a child process (``python3 -m moe_perception.ros.node``),
replays the image frames of a rosbag2 bag into it one at a time, records every output and
writes one mosaic PNG per frame and ``summary.json``.
"""

from __future__ import annotations

import array
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from moe_perception.render import IMAGE_OUTPUTS, colorize_map, output_topic
from moe_perception.resources import find_share_file
from moe_perception.ros.codec import ImageDecodeError, decode_compressed, decode_image
from moe_perception.ros.topics import CLASS_INFO_TOPIC
from moe_perception.uncertainty import MAP_NAMES

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
# The shipped sample: a folder holding one rosbag2 folder and its ATTRIBUTION.md.
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
DEMO_NODE_NAME = "moe_demo_segmenter"
# Every mosaic tile is scaled to this width: large frames stay a few hundred kB, small
# ones stay readable.
TILE_WIDTH = 320
TITLE_HEIGHT = 18


# The package's Fast DDS profile for large images (docs/node.md): a frame's outputs do not
# fit Fast DDS's default 512 KiB shared-memory segment, and a dropped sample costs a
# heartbeat period. Used unless the user set a profile of their own.
FASTDDS_PROFILE_FILE = "config/fastdds_large_images.xml"
FASTDDS_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


class DemoError(RuntimeError):
    """The demo could not finish; the message says why (and quotes the node's log)."""


@dataclass(frozen=True)
class BagFrame:
    """One recorded image.

    Attributes:
        bag_time: the bag's receive time of the message, nanoseconds.
        message: the message as recorded (a rosbags message object).
        image: its pixels as RGB uint8 (H, W, 3).
    """

    bag_time: int
    message: Any
    image: np.ndarray


@dataclass(frozen=True)
class BagSequence:
    """The frames of one image topic of a bag."""

    topic: str
    msgtype: str
    frames: tuple[BagFrame, ...]
    skipped: tuple[str, ...] = ()


def find_bag(path: Path) -> Path:
    """``path`` itself if it is a bag (a rosbag2 folder or a bag file), else the one
    rosbag2 folder directly inside it (as in the shipped sample folder).

    Raises:
        FileNotFoundError: nothing at ``path``, or no single bag inside it.
    """
    if not path.exists():
        raise FileNotFoundError(f"no bag at {path}")
    if path.is_file() or (path / "metadata.yaml").is_file():
        return path
    inside = sorted(p for p in path.iterdir() if (p / "metadata.yaml").is_file())
    if len(inside) != 1:
        found = ", ".join(p.name for p in inside) or "none"
        raise FileNotFoundError(
            f"{path} is not a rosbag2 folder and holds {len(inside)} of them ({found}); "
            "name one bag"
        )
    return inside[0]


def read_bag_frames(bag: Path, topic: str | None = None, limit: int = 12) -> BagSequence:
    """The first ``limit`` frames of an image topic of a rosbag2 (or rosbag1) bag.

    Args:
        bag: the bag folder (or file).
        topic: which topic; ``None``: the first Image topic (else CompressedImage) by name.
        limit: at most this many frames.

    Raises:
        FileNotFoundError: no bag at ``bag``.
        ValueError: not a readable bag, no such image topic, or no decodable frame.
    """
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    bag = find_bag(bag)
    # Bags without embedded message definitions fall back to these (Image is unchanged
    # across ROS 2 releases).
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    try:
        with AnyReader([bag], default_typestore=typestore) as reader:
            images = sorted(
                (c for c in reader.connections if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)),
                key=lambda c: (c.msgtype != IMAGE_TYPE, c.topic),
            )
            if topic is not None:
                images = [c for c in images if c.topic == topic]
            if not images:
                found = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
                wanted = f"image topic {topic}" if topic else "an image topic"
                raise ValueError(f"{bag} has no {wanted}; it has: {', '.join(found) or 'none'}")
            chosen = images[0]
            frames: list[BagFrame] = []
            skipped: list[str] = []
            connections = [c for c in images if c.topic == chosen.topic]
            for connection, bag_time, rawdata in reader.messages(connections=connections):
                message = reader.deserialize(rawdata, connection.msgtype)
                try:
                    if connection.msgtype == IMAGE_TYPE:
                        image = np.array(decode_image(message))
                    else:
                        image = decode_compressed(message)
                except ImageDecodeError as error:
                    skipped.append(f"message at {bag_time}: {error}")
                    continue
                frames.append(BagFrame(bag_time=bag_time, message=message, image=image))
                if len(frames) >= limit:
                    break
    except AnyReaderError as error:
        raise ValueError(f"cannot read bag {bag}: {error}") from error
    if not frames:
        raise ValueError(f"{bag}: no decodable frame on {chosen.topic}: {skipped[:3]}")
    return BagSequence(chosen.topic, chosen.msgtype, tuple(frames), tuple(skipped))


def ros_message(frame: BagFrame, msgtype: str) -> Any:
    """The rclpy message of a recorded one."""
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header

    recorded = frame.message
    header = Header(frame_id=recorded.header.frame_id)
    data = array.array("B", np.asarray(recorded.data, dtype=np.uint8).tobytes())
    if msgtype == COMPRESSED_TYPE:
        return CompressedImage(header=header, format=recorded.format, data=data)
    return Image(
        header=header,
        height=recorded.height,
        width=recorded.width,
        encoding=recorded.encoding,
        is_bigendian=recorded.is_bigendian,
        step=recorded.step,
        data=data,
    )


@dataclass
class FrameRecord:
    """Everything the node published for one input frame."""

    images: dict[str, Any] = field(default_factory=dict)
    gate_entropy: float | None = None
    gate_weights: list[float] | None = None

    def complete(self, image_outputs: list[str]) -> bool:
        return (
            all(name in self.images for name in image_outputs)
            and self.gate_entropy is not None
            and self.gate_weights is not None
        )


def _stamp_key(stamp: Any) -> tuple[int, int]:
    return (int(stamp.sec), int(stamp.nanosec))


class _Recorder:
    """Subscribes to every output of one camera and files messages by input stamp."""

    def __init__(self, node: Any, camera_topic: str) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float32, Float32MultiArray, String

        self.class_info: dict[str, Any] | None = None
        self.records: dict[tuple[int, int], FrameRecord] = {}
        # Float32 outputs carry no header: they belong to the frame in flight (one at a time).
        self.current: FrameRecord = FrameRecord()
        outputs = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        # The demo starts the node without a namespace.
        node.create_subscription(String, f"/{CLASS_INFO_TOPIC}", self._on_class_info, latched)
        for name in IMAGE_OUTPUTS:
            node.create_subscription(
                Image, output_topic(camera_topic, name), self._image_callback(name), outputs
            )
        node.create_subscription(
            Float32, output_topic(camera_topic, "gate_entropy"), self._on_gate_entropy, outputs
        )
        node.create_subscription(
            Float32MultiArray,
            output_topic(camera_topic, "gate_weights"),
            self._on_gate_weights,
            outputs,
        )

    def _on_class_info(self, message: Any) -> None:
        self.class_info = json.loads(message.data)

    def _image_callback(self, name: str) -> Callable[[Any], None]:
        def callback(message: Any) -> None:
            key = _stamp_key(message.header.stamp)
            self.records.setdefault(key, FrameRecord()).images[name] = message

        return callback

    def _on_gate_entropy(self, message: Any) -> None:
        self.current.gate_entropy = float(message.data)

    def _on_gate_weights(self, message: Any) -> None:
        self.current.gate_weights = [float(w) for w in message.data]


def _stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.strip().splitlines()[-lines:]) or "(the node printed nothing)"


def _tile(image: np.ndarray, title: str, width: int, height: int) -> PILImage.Image:
    tile = PILImage.new("RGB", (width, height + TITLE_HEIGHT), (255, 255, 255))
    picture = PILImage.fromarray(np.ascontiguousarray(image)).resize(
        (width, height), PILImage.BILINEAR
    )
    tile.paste(picture, (0, TITLE_HEIGHT))
    ImageDraw.Draw(tile).text((4, 3), title, fill=(0, 0, 0), font=ImageFont.load_default())
    return tile


def _gate_tile(
    names: list[str], weights: list[float], entropy: float, width: int, height: int
) -> PILImage.Image:
    tile = PILImage.new("RGB", (width, height + TITLE_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default()
    draw.text((4, 3), f"gate weights (gate entropy {entropy:.3f})", fill=(0, 0, 0), font=font)
    row = max(14, min(40, (height - 10) // max(1, len(weights))))
    bar_left, bar_right = 8, width - 8
    for i, (name, weight) in enumerate(zip(names, weights)):
        top = TITLE_HEIGHT + 8 + i * row
        draw.rectangle((bar_left, top, bar_right, top + row - 4), outline=(180, 180, 180))
        right = bar_left + int(round((bar_right - bar_left) * min(max(weight, 0.0), 1.0)))
        draw.rectangle((bar_left, top, right, top + row - 4), fill=(70, 130, 200))
        draw.text((bar_left + 4, top + 2), f"{name} {weight:.3f}", fill=(0, 0, 0), font=font)
    return tile


def mosaic(
    image: np.ndarray,
    outputs: dict[str, np.ndarray],
    expert_names: list[str],
    gate_weights: list[float],
    gate_entropy: float,
    confidence_map: str,
) -> PILImage.Image:
    """One frame as a 3x3 grid: image, labels, overlay, the four maps, the map behind
    ``uncertainty_color`` blended over the image, and the gate weights.

    Args:
        image: the input RGB.
        outputs: decoded node outputs by name (``labels_color``, ``overlay``,
            ``uncertainty/<map>``, ``uncertainty_color``).
    """
    height, width = outputs["overlay"].shape[:2]
    tile_width = TILE_WIDTH
    tile_height = max(1, round(height * tile_width / width))
    tiles = [
        _tile(image, "image", tile_width, tile_height),
        _tile(outputs["labels_color"], "labels", tile_width, tile_height),
        _tile(outputs["overlay"], "overlay", tile_width, tile_height),
    ]
    for name in MAP_NAMES:
        values = outputs[f"uncertainty/{name}"]
        title = f"{name.replace('_', ' ')} (mean {float(values.mean()):.3f})"
        tiles.append(_tile(colorize_map(values), title, tile_width, tile_height))
    tiles.append(
        _tile(
            outputs["uncertainty_color"],
            f"uncertainty_color ({confidence_map.replace('_', ' ')})",
            tile_width,
            tile_height,
        )
    )
    tiles.append(_gate_tile(expert_names, gate_weights, gate_entropy, tile_width, tile_height))
    columns = 3
    rows = -(-len(tiles) // columns)
    cell_w, cell_h = tiles[0].size
    canvas = PILImage.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, ((i % columns) * cell_w, (i // columns) * cell_h))
    return canvas


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its files, and what it measured."""

    out_dir: Path
    mosaics: tuple[Path, ...]
    summary: Path
    latencies_ms: tuple[float, ...]


def run_demo(
    model: Path,
    bag: Path,
    out_dir: Path,
    topic: str | None = None,
    device: str = "auto",
    max_frames: int = 12,
    frame_timeout: float = 120.0,
    startup_timeout: float = 300.0,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the node on ``bag`` and write ``out_dir`` (see the module docstring).

    Raises:
        FileNotFoundError, ValueError: a missing model or bag, an unreadable bag.
        DemoError: the node did not start, died, or did not answer a frame in time.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from moe_perception.ros.codec import image_view

    if not model.is_file():
        raise FileNotFoundError(f"no model at {model}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    bag = find_bag(bag)
    sequence = read_bag_frames(bag, topic, max_frames)
    for problem in sequence.skipped:
        log(f"demo: skipping a bad frame in the bag: {problem}")
    compressed = sequence.msgtype == COMPRESSED_TYPE
    image_topic = sequence.topic.removesuffix("/compressed") if compressed else sequence.topic
    confidence_map = "predictive_entropy"

    # Keep DDS on this machine and away from other ROS graphs unless told otherwise.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain_id = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(1, 101))
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("frame_*.png"):
        stale.unlink()

    with tempfile.TemporaryDirectory(prefix="moe_demo_") as scratch:
        params = Path(scratch) / "params.yaml"
        node_log = Path(scratch) / "node.log"
        params.write_text(
            yaml.safe_dump(
                {
                    "/**": {
                        "ros__parameters": {
                            "model_path": str(model.resolve()),
                            "device": device,
                            "image_topics": [image_topic],
                            "input_transport": "compressed" if compressed else "raw",
                            # Every replayed frame must arrive: the default best-effort
                            # sensor QoS may drop a large frame.
                            "input_reliability": "reliable",
                            "confidence_map": confidence_map,
                        }
                    }
                }
            )
        )
        environment = {**os.environ, "ROS_DOMAIN_ID": str(domain_id)}
        uses_fastdds = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith(
            "rmw_fastrtps"
        )
        if uses_fastdds and not any(os.environ.get(name) for name in FASTDDS_PROFILE_VARIABLES):
            profile = find_share_file(FASTDDS_PROFILE_FILE)
            environment["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
        command = [
            sys.executable,
            "-m",
            "moe_perception.ros.node",
            "--ros-args",
            "-r",
            f"__node:={DEMO_NODE_NAME}",
            "--params-file",
            str(params),
        ]
        log(f"demo: starting the segmenter node with {model} ...")
        with node_log.open("wb") as node_output:
            process = subprocess.Popen(
                command, stdout=node_output, stderr=subprocess.STDOUT, env=environment
            )
        context = Context()
        rclpy.init(context=context, domain_id=domain_id)
        try:
            node = Node("moe_demo_player", context=context)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            recorder = _Recorder(node, image_topic)
            message_type = type(ros_message(sequence.frames[0], sequence.msgtype))
            publisher = node.create_publisher(
                message_type,
                sequence.topic if compressed else image_topic,
                QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
            )

            def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
                deadline = time.monotonic() + timeout
                while not done():
                    if process.poll() is not None:
                        raise DemoError(
                            f"the node exited with status {process.returncode} {what}:\n"
                            + _log_tail(node_log)
                        )
                    if time.monotonic() > deadline:
                        raise DemoError(
                            f"timed out after {timeout:.0f} s {what}; node log:\n"
                            + _log_tail(node_log)
                        )
                    executor.spin_once(timeout_sec=0.05)

            wait_until(
                lambda: recorder.class_info is not None and publisher.get_subscription_count() > 0,
                startup_timeout,
                "while starting",
            )
            assert recorder.class_info is not None
            expert_names = list(recorder.class_info["expert_names"])
            log(f"demo: replaying {len(sequence.frames)} frames of {sequence.topic} from {bag}")
            summary_frames = []
            mosaics = []
            latencies = []
            for index, frame in enumerate(sequence.frames):
                message = ros_message(frame, sequence.msgtype)
                record, sent = FrameRecord(), 0.0
                # A frame is resent (with a new stamp) if the node had not yet matched
                # all our output subscriptions when it arrived.
                for _attempt in range(int(frame_timeout // 5) + 1):
                    message.header.stamp = node.get_clock().now().to_msg()
                    key = _stamp_key(message.header.stamp)
                    recorder.current = record = FrameRecord()
                    recorder.records[key] = record
                    sent = time.monotonic()
                    publisher.publish(message)
                    try:
                        wait_until(
                            lambda record=record: record.complete(list(IMAGE_OUTPUTS)),
                            5.0,
                            f"waiting for the outputs of frame {index}",
                        )
                        break
                    except DemoError:
                        if process.poll() is not None:
                            raise
                else:
                    raise DemoError(
                        f"no complete outputs for frame {index} after {frame_timeout:.0f} s; "
                        f"node log:\n{_log_tail(node_log)}"
                    )
                latency_ms = (time.monotonic() - sent) * 1000.0
                latencies.append(latency_ms)
                outputs = {name: np.array(image_view(m)) for name, m in record.images.items()}
                assert record.gate_entropy is not None and record.gate_weights is not None
                picture = mosaic(
                    frame.image,
                    outputs,
                    expert_names,
                    record.gate_weights,
                    record.gate_entropy,
                    confidence_map,
                )
                path = out_dir / f"frame_{index:03d}.png"
                picture.save(path)
                mosaics.append(path)
                summary_frames.append(
                    {
                        "index": index,
                        "bag_time_ns": frame.bag_time,
                        "frame_id": frame.message.header.frame_id,
                        "size": list(frame.image.shape[:2]),
                        "latency_ms": round(latency_ms, 2),
                        "gate_entropy": record.gate_entropy,
                        "gate_weights": dict(zip(expert_names, record.gate_weights)),
                        "map_means": {
                            name: float(outputs[f"uncertainty/{name}"].mean())
                            for name in MAP_NAMES
                        },
                        "mosaic": path.name,
                    }
                )
                log(
                    f"demo: frame {index}: {latency_ms:.0f} ms, gate entropy "
                    f"{record.gate_entropy:.3f}"
                )
                recorder.records.clear()
        finally:
            rclpy.try_shutdown(context=context)
            _stop(process)
    summary = out_dir / "summary.json"
    summary.write_text(
        json.dumps(
            {
                "model": str(model),
                "bag": str(bag),
                "topic": sequence.topic,
                "device": device,
                "class_names": recorder.class_info["class_names"],
                "expert_names": expert_names,
                "confidence_map": confidence_map,
                "latency_ms": {
                    "what": "publish of the input to receipt of its last output, over DDS",
                    "mean": round(float(np.mean(latencies)), 2),
                    "median": round(float(np.median(latencies)), 2),
                    "max": round(float(np.max(latencies)), 2),
                },
                "frames": summary_frames,
            },
            indent=2,
        )
    )
    return DemoResult(out_dir, tuple(mosaics), summary, tuple(latencies))
