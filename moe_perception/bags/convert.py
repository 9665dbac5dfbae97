"""Writing image datasets (frames on disk) into rosbag2: shared by the converters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moe_perception.bags.bagfile import BagFormat, label_classes_custom_data, open_bag_writer


@dataclass(frozen=True)
class CameraStream:
    """The topics of one camera.

    Attributes:
        image_topic: ``sensor_msgs/Image`` rgb8 topic.
        frame_id: header frame id (optical-frame convention: z forward, x right, y down).
        label_topic: mono8 class-id ``sensor_msgs/Image`` topic, or ``None``.
        info_topic: ``sensor_msgs/CameraInfo`` topic, or ``None``.
    """

    image_topic: str
    frame_id: str
    label_topic: str | None = None
    info_topic: str | None = None


@dataclass(frozen=True)
class Frame:
    """One image (and its label) to write, read from disk only when written."""

    stamp_ns: int
    stream: CameraStream
    image_path: Path
    label_path: Path | None = None


# (stream, header, width, height) -> CameraInfo message, for streams with an info topic.
CameraInfoFactory = Callable[[CameraStream, Any, int, int], Any]


@dataclass(frozen=True)
class ConversionSummary:
    """What a conversion wrote: messages per topic, first and last stamp (ns)."""

    path: Path
    counts: dict[str, int]
    start_ns: int
    end_ns: int

    def describe(self) -> str:
        lines = [
            f"wrote {self.path}: {sum(self.counts.values())} messages, "
            f"{(self.end_ns - self.start_ns) / 1e9:.3f} s"
        ]
        lines += [f"  {topic}: {count}" for topic, count in sorted(self.counts.items())]
        return "\n".join(lines)


def read_image_file(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: it cannot be decoded (the message names the file).
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image file missing: {path}")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error


def read_single_channel_file(path: Path) -> np.ndarray:
    """A single-channel 8-bit PNG (mode L or P) as uint8 (H, W).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: it cannot be decoded or has several channels.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"label file missing: {path}")
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P"):
                raise ValueError(f"label {path} is not single-channel 8-bit (mode {image.mode})")
            return np.asarray(image).astype(np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot decode label {path}: {error}") from error


def write_frames(
    out: str | Path,
    frames: Sequence[Frame],
    bag_format: BagFormat,
    read_label: Callable[[Path], np.ndarray] | None = None,
    camera_info: CameraInfoFactory | None = None,
    label_classes: Sequence[str] | None = None,
    progress: bool | None = None,
) -> ConversionSummary:
    """Write ``frames`` in time order into a new bag at ``out``.

    Each frame becomes an rgb8 image, a mono8 label image (when the stream has a label
    topic and the frame a label file) and a CameraInfo (when the stream has an info
    topic), all with the same header and the same log time: the frame's stamp.

    Args:
        out: the new bag folder; must not exist.
        frames: the frames; sorted here by (stamp, image topic).
        bag_format: storage, version and compression.
        read_label: label file -> class ids uint8 (H, W), 255 = void.
        camera_info: builds CameraInfo messages for streams with ``info_topic``.
        label_classes: class names of the label ids, recorded in the bag's custom_data.
        progress: show a progress bar (``None``: only on a terminal).

    Raises:
        ValueError: no frames, a label of another size than its image, an unreadable file.
        FileNotFoundError: a missing file.
        FileExistsError: ``out`` exists.
    """
    from tqdm import tqdm

    from moe_perception.bags import messages

    if not frames:
        raise ValueError("no frames to write")
    ordered = sorted(frames, key=lambda f: (f.stamp_ns, f.stream.image_topic))
    streams = list(dict.fromkeys(f.stream for f in ordered))
    label_topics = [s.label_topic for s in streams if s.label_topic]
    custom = (
        label_classes_custom_data({topic: label_classes for topic in label_topics})
        if label_classes is not None and label_topics
        else None
    )
    counts: dict[str, int] = {}
    store = messages.typestore()
    with open_bag_writer(out, bag_format, custom) as writer:
        connections: dict[str, Any] = {}
        for stream in streams:
            topics = [(stream.image_topic, "sensor_msgs/msg/Image")]
            if stream.info_topic and camera_info is not None:
                topics.append((stream.info_topic, "sensor_msgs/msg/CameraInfo"))
            if stream.label_topic and read_label is not None:
                topics.append((stream.label_topic, "sensor_msgs/msg/Image"))
            for topic, msgtype in topics:
                if topic in connections:
                    raise ValueError(f"two cameras write the same topic {topic}")
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
                counts[topic] = 0

        def put(topic: str, stamp_ns: int, msg: Any) -> None:
            writer.write(connections[topic], stamp_ns, messages.serialize(msg))
            counts[topic] += 1

        for frame in tqdm(
            ordered, desc=f"writing {Path(out).name}", unit="frame", disable=_off(progress)
        ):
            stream = frame.stream
            image = read_image_file(frame.image_path)
            header = messages.make_header(frame.stamp_ns, stream.frame_id)
            put(stream.image_topic, frame.stamp_ns, messages.numpy_to_image(image, "rgb8", header))
            height, width = image.shape[:2]
            if stream.info_topic and camera_info is not None:
                put(stream.info_topic, frame.stamp_ns, camera_info(stream, header, width, height))
            if stream.label_topic and read_label is not None and frame.label_path is not None:
                label = read_label(frame.label_path)
                if label.shape != image.shape[:2]:
                    raise ValueError(
                        f"label {frame.label_path} is {label.shape[1]}x{label.shape[0]} but "
                        f"image {frame.image_path} is {width}x{height}"
                    )
                put(
                    stream.label_topic,
                    frame.stamp_ns,
                    messages.numpy_to_image(label, "mono8", header),
                )
    return ConversionSummary(Path(out), counts, ordered[0].stamp_ns, ordered[-1].stamp_ns)


def _off(progress: bool | None) -> bool | None:
    # tqdm's disable=None hides the bar when stderr is not a terminal.
    return None if progress is None else not progress
