"""Offline segmentation of a bag (``moe-perception process-bag``).

For every image topic ``T`` the output bag holds, with the input message's header and
log time, what the node publishes for ``T`` (names from
:func:`moe_perception.render.output_topic`, arrays from
:func:`moe_perception.render.frame_outputs`):

- ``<ns>/segmentation/labels`` and ``.../confidence``: ``sensor_msgs/Image`` mono8;
- ``.../labels_color``, ``.../overlay``, ``.../uncertainty_color``: rgb8;
- ``.../uncertainty/<map>``: 32FC1 in [0, 1];
- ``.../gate_entropy``: ``std_msgs/Float32``;
- ``.../gate_weights``: ``std_msgs/Float32MultiArray``, one dimension labelled
  ``experts:<name>,<name>,...`` with size = stride = K.

Inputs are decoded as the node decodes them (:mod:`moe_perception.ros.codec`, which
imports no rclpy), the same uncertainty maps are computed, and frames go through the
segmenter one at a time (the node batches the cameras' newest frames; with one camera
that is one frame too).

Ground truth: a mono8 ``<ns>/labels`` topic (255 = void) whose class names, recorded by
this package's converters in the bag's custom_data, equal the model's classes is scored
frame by frame (matched on the header stamp) with mIoU and pixel accuracy; the scores go
to ``metrics.json`` inside the output bag folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from moe_perception.bags.bagfile import BagFormat, InputBag, check_new_output, open_bag_writer

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
GATE_OUTPUTS: tuple[str, ...] = ("gate_entropy", "gate_weights")
METRICS_FILE = "metrics.json"
ColorMap = Literal["turbo", "gray"]
Resolution = Literal["input", "network"]


@dataclass(frozen=True)
class ProcessOptions:
    """How ``process-bag`` runs.

    Attributes:
        checkpoint: the model (``None``: the shipped default model).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        fp16: half precision on CUDA.
        topics: image topics to segment (``None``: every colour Image and every
            CompressedImage topic except ``*/labels`` and ``*/segmentation/*``).
        outputs: outputs to write, names of ``IMAGE_OUTPUTS`` plus ``gate_entropy`` and
            ``gate_weights`` (``None``: all).
        confidence_map: map driving ``confidence`` and ``uncertainty_color``.
        colormap: colour map of ``uncertainty_color``.
        alpha: weight of the colours blended over the image.
        resolution: ``input`` (outputs at each image's size) or ``network`` (at the
            network's input size), the node's ``output_resolution``.
        copy_inputs: also copy every input topic into the output bag.
        bag_format: storage, metadata version, compression.
    """

    checkpoint: Path | None = None
    device: str = "auto"
    fp16: bool = False
    topics: tuple[str, ...] | None = None
    outputs: tuple[str, ...] | None = None
    confidence_map: str = "predictive_entropy"
    colormap: ColorMap = "turbo"
    alpha: float = 0.5
    resolution: Resolution = "input"
    copy_inputs: bool = True
    bag_format: BagFormat = field(default_factory=BagFormat)


@dataclass(frozen=True)
class ProcessReport:
    """What ``process-bag`` did.

    Attributes:
        path: the output bag.
        frames: frames segmented per input topic.
        not_copied: input topics not copied (no message definition), with the reason.
        metrics: the content of metrics.json (``None`` when no topic was scored).
        notes: why a label topic was not scored, unmatched frames, ...
    """

    path: Path
    frames: dict[str, int]
    not_copied: dict[str, str]
    metrics: dict[str, Any] | None
    notes: tuple[str, ...]

    def describe(self) -> str:
        lines = [f"wrote {self.path}"]
        lines += [f"  {topic}: {n} frames segmented" for topic, n in sorted(self.frames.items())]
        lines += [f"  not copied {topic}: {why}" for topic, why in self.not_copied.items()]
        if self.metrics is not None:
            for topic, scores in self.metrics["cameras"].items():
                lines.append(
                    f"  {topic} vs {scores['label_topic']}: {scores['frames']} frames, "
                    f"mIoU {_fmt(scores['miou'])}, pixel accuracy "
                    f"{_fmt(scores['pixel_accuracy'])}"
                )
            overall = self.metrics["overall"]
            lines.append(
                f"  overall: mIoU {_fmt(overall['miou'])}, pixel accuracy "
                f"{_fmt(overall['pixel_accuracy'])} (per frame in {self.path / METRICS_FILE})"
            )
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def is_label_topic(topic: str) -> bool:
    """Ground-truth label topics (``<ns>/labels``) are never segmented."""
    return topic.rstrip("/").rsplit("/", 1)[-1] == "labels" and "/segmentation/" not in topic


def select_image_topics(bag: InputBag, topics: tuple[str, ...] | None) -> list[str]:
    """The topics to segment.

    Without ``topics``: every CompressedImage topic and every Image topic whose first
    message is a colour image, except label (``*/labels``) and output
    (``*/segmentation/*``) topics. Named ``topics`` may be of any encoding the node
    decodes (mono images are segmented as grey RGB, as the node does).

    Raises:
        ValueError: a requested topic is absent or not an image topic, or none found.
    """
    from moe_perception.bags import messages
    from moe_perception.ros.codec import RAW_ENCODINGS

    types = {t.name: t.msgtype for t in bag.topics}
    if topics is not None:
        for topic in topics:
            if topic not in types:
                raise ValueError(f"topic {topic} is not in bag {bag.path}")
            if types[topic] not in IMAGE_TYPES:
                raise ValueError(f"topic {topic} in {bag.path} is {types[topic]}, not an image")
        return list(dict.fromkeys(topics))
    selected = []
    for name, msgtype in types.items():
        if msgtype not in IMAGE_TYPES or is_label_topic(name) or "/segmentation/" in name:
            continue
        if msgtype == "sensor_msgs/msg/Image":
            # Depth and mono cameras are copied, not segmented: look at the first image.
            stream = bag.messages([name])
            first = next(stream, None)
            stream.close()
            if first is None:
                continue
            layout = RAW_ENCODINGS.get(messages.deserialize(first[2], msgtype).encoding)
            if layout is None or layout.order == "mono":
                continue
        selected.append(name)
    if not selected:
        raise ValueError(f"bag {bag.path} has no colour image topics to segment")
    return selected


class _Evaluation:
    """Scores predicted labels against ``<ns>/labels`` topics, pairing on header stamps."""

    def __init__(self, label_of: dict[str, str], class_names: tuple[str, ...]) -> None:
        self.label_of = label_of
        self.image_of = {label: image for image, label in label_of.items()}
        self.class_names = class_names
        self.predictions: dict[str, dict[int, np.ndarray]] = {t: {} for t in label_of}
        self.truths: dict[str, dict[int, np.ndarray]] = {t: {} for t in label_of}
        self.per_frame: dict[str, list[dict[str, Any]]] = {t: [] for t in label_of}
        self.matrices: dict[str, Any] = {}

    def prediction(self, topic: str, stamp_ns: int, labels: np.ndarray) -> None:
        truth = self.truths[topic].pop(stamp_ns, None)
        if truth is None:
            self.predictions[topic][stamp_ns] = labels
        else:
            self._score(topic, stamp_ns, labels, truth)

    def truth(self, label_topic: str, stamp_ns: int, labels: np.ndarray) -> None:
        topic = self.image_of[label_topic]
        predicted = self.predictions[topic].pop(stamp_ns, None)
        if predicted is None:
            self.truths[topic][stamp_ns] = labels
        else:
            self._score(topic, stamp_ns, predicted, labels)

    def _score(self, topic: str, stamp_ns: int, predicted: np.ndarray, truth: np.ndarray) -> None:
        import torch

        from moe_perception.metrics.segmentation import ConfusionMatrix

        if predicted.shape != truth.shape:
            raise ValueError(
                f"{self.label_of[topic]} at stamp {stamp_ns} ns is {truth.shape[1]}x"
                f"{truth.shape[0]} but the image on {topic} is {predicted.shape[1]}x"
                f"{predicted.shape[0]}"
            )
        frame = ConfusionMatrix(len(self.class_names))
        frame.update(torch.from_numpy(predicted), torch.from_numpy(truth))
        labelled = int(frame.matrix.sum())
        self.per_frame[topic].append(
            {
                "stamp_ns": stamp_ns,
                "miou": _finite(frame.miou()),
                "pixel_accuracy": _finite(frame.pixel_accuracy()) if labelled else None,
                "labelled_pixels": labelled,
            }
        )
        previous = self.matrices.get(topic)
        self.matrices[topic] = frame.matrix if previous is None else previous + frame.matrix

    def _summary(self, matrices: list[Any], frames: int) -> dict[str, Any]:
        from moe_perception.metrics.segmentation import ConfusionMatrix

        total = ConfusionMatrix(len(self.class_names))
        for matrix in matrices:
            total.matrix += matrix
        labelled = int(total.matrix.sum()) > 0
        return {
            "frames": frames,
            "miou": _finite(total.miou()),
            "pixel_accuracy": _finite(total.pixel_accuracy()) if labelled else None,
            "iou": {n: _finite(v) for n, v in zip(self.class_names, total.iou().tolist())},
        }

    def unmatched(self) -> list[str]:
        return [
            f"{topic}: {len(self.predictions[topic])} frames without a label and "
            f"{len(self.truths[topic])} labels without a frame (matched on header stamp)"
            for topic in self.label_of
            if self.predictions[topic] or self.truths[topic]
        ]

    def metrics(self, checkpoint: str) -> dict[str, Any]:
        cameras = {
            topic: {
                "label_topic": self.label_of[topic],
                **self._summary(
                    [self.matrices[topic]] if topic in self.matrices else [],
                    len(self.per_frame[topic]),
                ),
                "per_frame": self.per_frame[topic],
            }
            for topic in self.label_of
        }
        return {
            "checkpoint": checkpoint,
            "classes": list(self.class_names),
            "ignore_index": 255,
            "cameras": cameras,
            "overall": self._summary(
                list(self.matrices.values()), sum(len(f) for f in self.per_frame.values())
            ),
        }


def _scored_label_topics(
    bag: InputBag,
    image_topics: list[str],
    class_names: tuple[str, ...],
    resolution: Resolution,
    notes: list[str],
) -> dict[str, str]:
    """image topic -> its ``<ns>/labels`` topic, for those that can be scored."""
    from moe_perception.render import camera_namespace

    types = {t.name: t.msgtype for t in bag.topics}
    recorded_classes = bag.label_classes()
    label_of = {}
    for topic in image_topics:
        label_topic = f"{camera_namespace(topic)}/labels"
        if types.get(label_topic) != "sensor_msgs/msg/Image":
            continue
        recorded = recorded_classes.get(label_topic)
        if resolution != "input":
            notes.append(f"{label_topic} not scored: outputs are at network resolution")
        elif recorded is None:
            notes.append(f"{label_topic} not scored: the bag does not record its classes")
        elif recorded != class_names:
            notes.append(
                f"{label_topic} not scored: its {len(recorded)} classes are not the "
                f"model's {len(class_names)} ({', '.join(class_names[:4])}, ...)"
            )
        else:
            label_of[topic] = label_topic
    return label_of


def process_bag(
    in_bag: str | Path,
    out_bag: str | Path,
    options: ProcessOptions,
    progress: bool | None = None,
    segmenter: Any = None,
) -> ProcessReport:
    """Segment every selected image of ``in_bag`` into a new bag ``out_bag``.

    Args:
        in_bag: the input bag folder.
        out_bag: the new output bag folder; must not exist.
        options: see :class:`ProcessOptions`.
        progress: show a progress bar (``None``: only on a terminal).
        segmenter: a ready :class:`~moe_perception.segmenter.Segmenter` (otherwise
            loaded from ``options.checkpoint``).

    Raises:
        FileNotFoundError, ValueError: a missing or unreadable bag or checkpoint, a bad
            option, an undecodable image, a label of another size than its image;
            FileExistsError: ``out_bag`` exists.
    """
    from tqdm import tqdm

    from moe_perception.bags import messages
    from moe_perception.render import IMAGE_OUTPUTS, output_topic, palette_lut
    from moe_perception.uncertainty import MAP_NAMES

    out_bag = Path(out_bag)
    check_new_output(out_bag)
    known = IMAGE_OUTPUTS + GATE_OUTPUTS
    wanted = options.outputs if options.outputs is not None else known
    if unknown := sorted(set(wanted) - set(known)):
        raise ValueError(f"unknown outputs {unknown}; choose from {known}")
    if options.confidence_map not in MAP_NAMES:
        raise ValueError(f"unknown confidence map {options.confidence_map!r}; use {MAP_NAMES}")
    if options.resolution not in ("input", "network"):
        raise ValueError(f"unknown resolution {options.resolution!r}; use input or network")
    image_outputs = [name for name in IMAGE_OUTPUTS if name in wanted]
    gate_outputs = [name for name in GATE_OUTPUTS if name in wanted]
    # The maps the node computes for these outputs (frame_outputs reads the driving map
    # whenever it renders anything).
    maps = [
        name
        for name in MAP_NAMES
        if f"uncertainty/{name}" in image_outputs
        or (name == options.confidence_map and image_outputs)
    ]
    with InputBag(in_bag) as bag:
        image_topics = select_image_topics(bag, options.topics)
        # The model loads only once the input is known to be usable (it takes seconds).
        if segmenter is None:
            segmenter = _load_segmenter(options)
        palette = palette_lut(segmenter.metadata.class_colors)
        class_names = tuple(segmenter.class_names)
        types = {t.name: t.msgtype for t in bag.topics}
        outputs_of = {
            topic: {name: output_topic(topic, name) for name in image_outputs + gate_outputs}
            for topic in image_topics
        }
        all_outputs = [name for names in outputs_of.values() for name in names.values()]
        if len(set(all_outputs)) != len(all_outputs):
            raise ValueError(
                f"image topics {image_topics} share a camera namespace, so their outputs "
                "would share topics; choose one per namespace with --topics"
            )
        if options.copy_inputs and (clash := sorted(set(all_outputs) & set(types))):
            raise ValueError(
                f"bag {bag.path} already holds output topics {clash[:3]}...; process the "
                "original bag, or write only the outputs (--no-inputs)"
            )
        notes: list[str] = []
        evaluation = _Evaluation(
            _scored_label_topics(bag, image_topics, class_names, options.resolution, notes),
            class_names,
        )
        frames = dict.fromkeys(image_topics, 0)
        total = sum(t.count for t in bag.topics if t.name in frames)

        with open_bag_writer(out_bag, options.bag_format) as writer:
            outputs = _Outputs(writer)
            not_copied = outputs.copy_connections(bag) if options.copy_inputs else {}
            with tqdm(total=total, desc="segmenting", unit="frame", disable=_off(progress)) as bar:
                for connection, stamp_ns, data in bag.messages():
                    outputs.copy(connection, stamp_ns, data)
                    topic = connection.topic
                    if topic in frames:
                        msg = messages.deserialize(data, connection.msgtype)
                        rgb = _decode(msg, connection.msgtype, topic, stamp_ns, bag.path)
                        segmentation = segmenter(rgb, maps=maps, resolution=options.resolution)
                        arrays = _render(rgb, segmentation, palette, image_outputs, options)
                        names = outputs_of[topic]
                        for name, array in arrays.items():
                            image = messages.numpy_to_image(array, _encoding(array), msg.header)
                            outputs.put(names[name], stamp_ns, image)
                        if "gate_entropy" in names:
                            value = messages.make_float32(segmentation.gate_entropy)
                            outputs.put(names["gate_entropy"], stamp_ns, value)
                        if "gate_weights" in names:
                            weights = messages.make_gate_weights(
                                segmentation.gate_weights, segmenter.expert_names
                            )
                            outputs.put(names["gate_weights"], stamp_ns, weights)
                        frames[topic] += 1
                        bar.update(1)
                        if topic in evaluation.label_of:
                            stamp = messages.header_stamp_ns(msg.header)
                            evaluation.prediction(topic, stamp, segmentation.labels)
                    elif topic in evaluation.image_of:
                        msg = messages.deserialize(data, connection.msgtype)
                        if msg.encoding not in ("mono8", "8UC1"):
                            raise ValueError(
                                f"label topic {topic} in {bag.path}: expected mono8 class ids, "
                                f"got {msg.encoding}"
                            )
                        stamp = messages.header_stamp_ns(msg.header)
                        evaluation.truth(topic, stamp, messages.image_to_numpy(msg))
            notes += evaluation.unmatched()
            metrics = None
            if evaluation.label_of:
                checkpoint = str(options.checkpoint) if options.checkpoint else "default"
                metrics = evaluation.metrics(checkpoint)
                (Path(writer.path) / METRICS_FILE).write_text(
                    json.dumps(metrics, indent=2) + "\n", encoding="utf-8"
                )
    return ProcessReport(out_bag, frames, not_copied, metrics, tuple(notes))


class _Outputs:
    """The output bag's connections: copies of the inputs, outputs created on first use."""

    def __init__(self, writer: Any) -> None:
        from moe_perception.bags import messages

        self.writer = writer
        self.store = messages.typestore()
        self.copied: dict[int, Any] = {}
        self.created: dict[str, Any] = {}

    def copy_connections(self, bag: InputBag) -> dict[str, str]:
        """Mirror every input connection; returns the topics that cannot be, and why."""
        from rosbags.interfaces import ConnectionExtRosbag2

        not_copied = {}
        for connection in bag.reader.connections:
            ext = connection.ext
            qos = ext.offered_qos_profiles if isinstance(ext, ConnectionExtRosbag2) else []
            msgdef = connection.msgdef.data if connection.msgdef is not None else ""
            digest = connection.digest
            if not (msgdef and digest):
                # sqlite3 bags before Iron store no definitions: use the type store's.
                if connection.msgtype not in self.store.types:
                    not_copied[connection.topic] = f"no definition of {connection.msgtype}"
                    continue
                msgdef, digest = None, None
            existing = next(
                (
                    c
                    for c in self.writer.connections
                    if (c.topic, c.msgtype) == (connection.topic, connection.msgtype)
                ),
                None,
            )
            # Several input connections of one topic and type (e.g. publishers with other
            # QoS) share one output connection.
            self.copied[connection.id] = existing or self.writer.add_connection(
                connection.topic,
                connection.msgtype,
                typestore=self.store,
                msgdef=msgdef,
                rihs01=digest,
                offered_qos_profiles=qos,
            )
        return not_copied

    def copy(self, connection: Any, stamp_ns: int, data: bytes) -> None:
        if connection.id in self.copied:
            self.writer.write(self.copied[connection.id], stamp_ns, data)

    def put(self, topic: str, stamp_ns: int, msg: Any) -> None:
        from moe_perception.bags import messages

        if topic not in self.created:
            self.created[topic] = self.writer.add_connection(
                topic, msg.__msgtype__, typestore=self.store
            )
        self.writer.write(self.created[topic], stamp_ns, messages.serialize(msg))


def _load_segmenter(options: ProcessOptions) -> Any:
    from moe_perception.segmenter import Segmenter

    if options.checkpoint is None:
        from moe_perception.resources import default_model_path

        try:
            path = default_model_path()
        except OSError as error:  # ament's index raises a bare OSError outside ROS
            raise FileNotFoundError(
                f"no checkpoint given and the default model cannot be found: {error}"
            ) from error
    else:
        path = Path(options.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
    return Segmenter.from_checkpoint(path, device=options.device, fp16=options.fp16)


def _decode(msg: Any, msgtype: str, topic: str, stamp_ns: int, bag: Path) -> np.ndarray:
    """RGB uint8 of an input image, decoded as the node decodes it."""
    from moe_perception.ros.codec import decode_compressed, decode_image

    try:
        if msgtype == "sensor_msgs/msg/CompressedImage":
            rgb = decode_compressed(msg)
        else:
            rgb = decode_image(msg)
    except ValueError as error:
        raise ValueError(
            f"bag {bag}: cannot decode the image on {topic} at {stamp_ns} ns: {error}"
        ) from error
    # Views over a deserialised message are read-only, which torch.from_numpy warns
    # about; the pixels are the same either way.
    return rgb if rgb.flags.writeable else rgb.copy()


def _render(
    rgb: np.ndarray,
    segmentation: Any,
    palette: np.ndarray,
    wanted: list[str],
    options: ProcessOptions,
) -> dict[str, np.ndarray]:
    """The node's image outputs of one frame."""
    from moe_perception import render
    from moe_perception.ros.codec import resize_rgb

    if not wanted:
        return {}
    return render.frame_outputs(
        resize_rgb(rgb, segmentation.labels.shape),
        segmentation,
        palette,
        wanted=wanted,
        confidence_map=options.confidence_map,
        colormap=options.colormap,
        alpha=options.alpha,
    )


def _encoding(array: np.ndarray) -> Literal["rgb8", "mono8", "32FC1"]:
    if array.dtype == np.float32:
        return "32FC1"
    return "rgb8" if array.ndim == 3 else "mono8"


def _off(progress: bool | None) -> bool | None:
    # tqdm's disable=None hides the bar when stderr is not a terminal.
    return None if progress is None else not progress
