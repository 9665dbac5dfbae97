"""The segmenter node: camera images in; labels, uncertainty maps and gate outputs out.

Subscription callbacks only keep the newest message per camera; a worker thread decodes
every pending frame, runs one batched :class:`~moe_perception.segmenter.Segmenter` call
over all cameras and publishes what :func:`~moe_perception.render.frame_outputs` renders
for the outputs somebody subscribes to.

Run it with ``ros2 run moe_perception segmenter_node`` or ``python3 -m
moe_perception.ros.node``.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import rclpy.exceptions
import rclpy.logging
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import (
    Float32,
    Float32MultiArray,
    Header,
    MultiArrayDimension,
    MultiArrayLayout,
    String,
)

from moe_perception.checkpoint import CheckpointError
from moe_perception.render import (
    IMAGE_OUTPUTS,
    NO_LABEL,
    camera_namespace,
    frame_outputs,
    gate_weights_label,
    output_topic,
    palette_lut,
)
from moe_perception.resources import default_model_path
from moe_perception.ros.codec import (
    ImageDecodeError,
    decode_compressed,
    decode_image,
    encode_image,
    resize_rgb,
)
from moe_perception.ros.frames import LatestFrames
from moe_perception.ros.parameters import (
    MODEL_PARAMETERS,
    PARAMETERS,
    PARAMETERS_BY_NAME,
    NodeSettings,
    ParameterSpec,
    ParameterValue,
    Reliability,
)
from moe_perception.ros.stats import CameraReport, CameraStats, ErrorThrottle
from moe_perception.ros.topics import CLASS_INFO_TOPIC, DIAGNOSTICS_TOPIC
from moe_perception.segmenter import Segmentation, Segmenter
from moe_perception.uncertainty import MAP_NAMES

NODE_NAME = "segmenter"
SCALAR_OUTPUTS = ("gate_entropy", "gate_weights")


class StartupError(RuntimeError):
    """The node cannot start as configured; the message says why."""


# Start-up failures that get one clear line and a non-zero exit instead of a traceback.
STARTUP_ERRORS: tuple[type[BaseException], ...] = (
    StartupError,
    CheckpointError,
    FileNotFoundError,
    ValueError,
    rclpy.exceptions.ParameterException,
    rclpy.exceptions.NameValidationException,
)


@dataclass(frozen=True)
class Camera:
    """One input topic and everything published for it."""

    index: int
    topic: str
    namespace: str
    image_publishers: dict[str, Publisher]
    gate_entropy_publisher: Publisher
    gate_weights_publisher: Publisher
    stats: CameraStats

    def wanted_outputs(self) -> set[str]:
        """Image outputs somebody subscribes to: only those are computed."""
        return {
            name
            for name, publisher in self.image_publishers.items()
            if publisher.get_subscription_count() > 0
        }


@dataclass(frozen=True)
class Frame:
    """A decoded input frame on its way through inference."""

    camera: Camera
    header: Header
    image: np.ndarray


def _descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    description = spec.description
    if spec.choices:
        description += f" One of: {', '.join(spec.choices)}."
    descriptor = ParameterDescriptor(description=description, read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = f"one of {', '.join(spec.choices)}"
    if spec.value_range is not None:
        low, high = spec.value_range
        if isinstance(spec.default, bool) or not isinstance(spec.default, (int, float)):
            raise TypeError(f"parameter {spec.name}: a range needs a numeric default")
        if isinstance(spec.default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
        else:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(high))
            ]
    return descriptor


def _python_value(value: Any) -> ParameterValue:
    """Parameter values as plain Python: arrays become tuples."""
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return tuple(value)
    return value


def _qos(reliability: Reliability, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE
        if reliability == "reliable"
        else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def image_message(image: np.ndarray, header: Header) -> Image:
    """An output array (mono8, rgb8 or 32FC1) as an Image carrying ``header``."""
    encoded = encode_image(image)
    return Image(
        header=header,
        height=encoded.height,
        width=encoded.width,
        encoding=encoded.encoding,
        is_bigendian=encoded.is_bigendian,
        step=encoded.step,
        data=encoded.data,
    )


def _stamp_is_set(stamp: TimeMsg) -> bool:
    return stamp.sec != 0 or stamp.nanosec != 0


def _milliseconds(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000.0:.1f}"


class SegmenterNode(Node):
    """Segments the images of one or more cameras with a mixture of experts.

    Args:
        node_name: the node's name.
        **kwargs: passed to :class:`rclpy.node.Node` (``namespace``, ``context``,
            ``parameter_overrides``, ``cli_args``...).

    Raises:
        StartupError, CheckpointError, FileNotFoundError, ValueError: the configuration
            or the model cannot be used (see :data:`STARTUP_ERRORS`).
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._frames: LatestFrames[int, Image | CompressedImage] = LatestFrames()
        self._worker: threading.Thread | None = None
        self._cameras: list[Camera] = []
        # Written by the worker only; the diagnostics timer reads them.
        self._batches = 0
        self._largest_batch = 0
        try:
            self._start()
        except BaseException:
            self.destroy_node()
            raise

    # Start-up -------------------------------------------------------------------------

    def _declare_parameters(self) -> NodeSettings:
        values: dict[str, ParameterValue] = {}
        for spec in PARAMETERS:
            default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
            value = _python_value(
                self.declare_parameter(spec.name, default, _descriptor(spec)).value
            )
            problem = spec.validate(value)
            if problem:
                raise StartupError(problem)
            values[spec.name] = value
        return NodeSettings(**values)  # type: ignore[arg-type]

    def _start(self) -> None:
        settings = self._settings = self._declare_parameters()
        self._throttle = ErrorThrottle(settings.error_log_period)
        if settings.cpu_threads:
            import torch

            torch.set_num_threads(settings.cpu_threads)

        model_path = Path(settings.model_path) if settings.model_path else None
        if model_path is None:
            try:
                model_path = default_model_path()
            except FileNotFoundError as error:
                raise StartupError(
                    f"no model_path given and the shipped default model is missing: {error}"
                ) from error
        self._model_path = model_path
        self._segmenter = Segmenter.from_checkpoint(
            model_path, device=settings.device, fp16=settings.fp16
        )
        metadata = self._segmenter.metadata
        self._palette = palette_lut(metadata.class_colors)
        self._expert_names = self._segmenter.expert_names
        for name, value in (
            ("class_names", list(metadata.class_names)),
            ("class_colors", [int(c) for rgb in metadata.class_colors for c in rgb]),
            ("expert_names", list(self._expert_names)),
        ):
            self.declare_parameter(
                name,
                value,
                ParameterDescriptor(description=MODEL_PARAMETERS[name], read_only=True),
                ignore_override=True,
            )

        class_info_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._class_info_publisher = self.create_publisher(
            String, CLASS_INFO_TOPIC, class_info_qos
        )
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._create_cameras(settings)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics_timer = self.create_timer(
            settings.diagnostics_period, self._publish_diagnostics
        )
        self._worker = threading.Thread(target=self._work, name="segmenter-worker", daemon=True)
        self._worker.start()
        # Last: a subscriber that sees class_info knows the node is ready.
        self._class_info_publisher.publish(String(data=self.class_info_json()))
        self.get_logger().info(
            f"model {model_path} on {self._segmenter.device}; serving "
            + ", ".join(f"{c.topic} -> {c.namespace}/segmentation/*" for c in self._cameras)
        )

    def _create_cameras(self, settings: NodeSettings) -> None:
        transport = settings.input_transport
        input_qos = _qos(settings.input_reliability, settings.input_depth)
        output_qos = _qos(settings.output_reliability, settings.output_depth)
        maps = set(settings.uncertainty_maps)
        image_outputs = [
            name
            for name in IMAGE_OUTPUTS
            if not name.startswith("uncertainty/") or name.split("/", 1)[1] in maps
        ]
        namespaces: dict[str, str] = {}
        for index, topic in enumerate(settings.image_topics):
            resolved = self.resolve_topic_name(topic)
            is_compressed_topic = resolved.endswith("/compressed")
            if transport == "raw" and is_compressed_topic:
                raise StartupError(
                    f"image topic {resolved} looks compressed but input_transport is raw; "
                    "set input_transport: compressed"
                )
            subscribed = resolved
            if transport == "compressed" and not is_compressed_topic:
                subscribed = f"{resolved}/compressed"
            namespace = camera_namespace(resolved)
            if namespace in namespaces:
                raise StartupError(
                    f"image topics {namespaces[namespace]} and {resolved} share the camera "
                    f"namespace {namespace or '/'}: their outputs would collide"
                )
            namespaces[namespace] = resolved
            camera = Camera(
                index=index,
                topic=subscribed,
                namespace=namespace,
                image_publishers={
                    name: self.create_publisher(Image, output_topic(resolved, name), output_qos)
                    for name in image_outputs
                },
                gate_entropy_publisher=self.create_publisher(
                    Float32, output_topic(resolved, "gate_entropy"), output_qos
                ),
                gate_weights_publisher=self.create_publisher(
                    Float32MultiArray, output_topic(resolved, "gate_weights"), output_qos
                ),
                stats=CameraStats(time.monotonic()),
            )
            message_type = CompressedImage if transport == "compressed" else Image
            self.create_subscription(
                message_type,
                subscribed,
                lambda message, camera=camera: self._on_image(camera, message),
                input_qos,
            )
            self._cameras.append(camera)

    def class_info_json(self) -> str:
        """What ``segmentation/class_info`` carries: classes, colours, experts."""
        metadata = self._segmenter.metadata
        return json.dumps(
            {
                "class_names": list(metadata.class_names),
                "class_colors": [list(rgb) for rgb in metadata.class_colors],
                "no_label": NO_LABEL,
                "expert_names": list(self._expert_names),
            }
        )

    # Parameters -----------------------------------------------------------------------

    def _on_set_parameters(self, parameters: Sequence[Parameter]) -> SetParametersResult:
        changes: dict[str, ParameterValue] = {}
        for parameter in parameters:
            spec = PARAMETERS_BY_NAME.get(parameter.name)
            if spec is None:
                continue
            value = _python_value(parameter.value)
            problem = spec.validate(value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            changes[parameter.name] = value
        # rclpy has already refused changes to read-only parameters.
        self._settings = replace(self._settings, **changes)  # type: ignore[arg-type]
        self._throttle.period = self._settings.error_log_period
        return SetParametersResult(successful=True)

    # Input ----------------------------------------------------------------------------

    def _on_image(self, camera: Camera, message: Image | CompressedImage) -> None:
        # Never decode or infer here: the executor must keep taking messages.
        camera.stats.on_received()
        if self._frames.put(camera.index, message) is not None:
            camera.stats.on_dropped()

    def _reject(self, camera: Camera, problem: str) -> None:
        camera.stats.on_rejected(problem)
        suppressed = self._throttle.allow(camera.topic, time.monotonic())
        if suppressed is not None:
            more = f" ({suppressed} more rejected since the last report)" if suppressed else ""
            self.get_logger().error(f"{camera.topic}: frame skipped: {problem}{more}")

    def _decode(self, camera: Camera, message: Image | CompressedImage) -> Frame | None:
        try:
            if isinstance(message, CompressedImage):
                image = decode_compressed(message)
            else:
                image = decode_image(message)
        except ImageDecodeError as error:
            self._reject(camera, str(error))
            return None
        return Frame(camera=camera, header=message.header, image=image)

    # Inference ------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._frames.closed:
            batch = self._frames.take()
            if not batch:
                continue
            try:
                self._process(batch)
            except Exception as error:  # Keep serving whatever one batch ran into.
                if self._frames.closed or not self.context.ok():
                    return  # Shutting down: publishers may already be gone.
                self.get_logger().error(f"batch failed, frames skipped: {error!r}")

    def _process(self, batch: dict[int, Image | CompressedImage]) -> None:
        frames = [
            frame
            for index, message in batch.items()
            if (frame := self._decode(self._cameras[index], message)) is not None
        ]
        if not frames:
            return
        settings = self._settings
        wanted = {frame.camera.index: frame.camera.wanted_outputs() for frame in frames}
        requested: set[str] = set().union(*wanted.values())
        driven = bool(requested & {"confidence", "uncertainty_color"})
        maps = [
            name
            for name in MAP_NAMES
            if f"uncertainty/{name}" in requested or (driven and name == settings.confidence_map)
        ]
        start = time.perf_counter()
        try:
            result = self._segmenter(
                [frame.image for frame in frames],
                maps=maps,
                resolution=settings.output_resolution,
            )
        except (RuntimeError, ValueError, TypeError) as error:
            for frame in frames:
                self._reject(frame.camera, f"inference failed: {error}")
            return
        inference = time.perf_counter() - start
        segmentations = result if isinstance(result, list) else [result]
        self._batches += 1
        self._largest_batch = max(self._largest_batch, len(frames))
        for frame, segmentation in zip(frames, segmentations):
            self._publish(frame, segmentation, wanted[frame.camera.index], settings, inference)

    def _publish(
        self,
        frame: Frame,
        segmentation: Segmentation,
        wanted: set[str],
        settings: NodeSettings,
        inference: float,
    ) -> None:
        camera, header = frame.camera, frame.header
        if wanted:
            image = resize_rgb(frame.image, segmentation.labels.shape)
            outputs = frame_outputs(
                image,
                segmentation,
                self._palette,
                wanted,
                confidence_map=settings.confidence_map,
                colormap=settings.colormap,
                alpha=settings.overlay_alpha,
            )
            for name, array in outputs.items():
                camera.image_publishers[name].publish(image_message(array, header))
        camera.gate_entropy_publisher.publish(Float32(data=float(segmentation.gate_entropy)))
        if camera.gate_weights_publisher.get_subscription_count() > 0:
            weights = segmentation.gate_weights
            layout = MultiArrayLayout(
                dim=[
                    MultiArrayDimension(
                        label=gate_weights_label(self._expert_names),
                        size=len(weights),
                        stride=len(weights),
                    )
                ]
            )
            camera.gate_weights_publisher.publish(
                Float32MultiArray(layout=layout, data=[float(w) for w in weights])
            )
        latency = None
        if _stamp_is_set(header.stamp):
            elapsed = self.get_clock().now() - Time.from_msg(header.stamp)
            latency = elapsed.nanoseconds / 1e9
        camera.stats.on_published(latency, inference)

    # Diagnostics ----------------------------------------------------------------------

    def _status(self, camera: Camera, report: CameraReport) -> DiagnosticStatus:
        if report.rejected_in_period:
            level = DiagnosticStatus.WARN
            message = f"{report.rejected_in_period} messages rejected: {report.last_error}"
        elif report.received == 0:
            level, message = DiagnosticStatus.OK, "waiting for images"
        else:
            level, message = DiagnosticStatus.OK, "ok"
        values = {
            "input rate (Hz)": f"{report.input_rate:.2f}",
            "output rate (Hz)": f"{report.output_rate:.2f}",
            "latency mean (ms)": _milliseconds(report.latency_mean),
            "latency max (ms)": _milliseconds(report.latency_max),
            "inference time mean (ms)": _milliseconds(report.inference_mean),
            "frames received": str(report.received),
            "frames published": str(report.published),
            "frames dropped": str(report.dropped),
            "messages rejected": str(report.rejected),
            "last error": report.last_error,
        }
        return DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: {camera.topic}",
            message=message,
            hardware_id=camera.namespace or "/",
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        diagnostics = DiagnosticArray()
        diagnostics.header.stamp = self.get_clock().now().to_msg()
        diagnostics.status = [
            self._status(camera, camera.stats.report(now)) for camera in self._cameras
        ]
        inference = {
            "model": str(self._model_path),
            "device": str(self._segmenter.device),
            "batches": str(self._batches),
            "largest batch": str(self._largest_batch),
        }
        diagnostics.status.append(
            DiagnosticStatus(
                level=DiagnosticStatus.OK,
                name=f"{self.get_name()}: inference",
                message="ok",
                hardware_id=str(self._segmenter.device),
                values=[KeyValue(key=key, value=value) for key, value in inference.items()],
            )
        )
        self._diagnostics_publisher.publish(diagnostics)

    # Shutdown -------------------------------------------------------------------------

    def destroy_node(self) -> None:
        """Stop the worker (it finishes the batch in hand), then destroy the node."""
        self._frames.close()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=30.0)
        super().destroy_node()


SHUTDOWN_GRACE_S = 1.0


def _shuts_down_within(context: Context, seconds: float) -> bool:
    """Whether ``context`` is (or within ``seconds`` becomes) shut down."""
    deadline = time.monotonic() + seconds
    while context.ok():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C; exit status 1 with one clear line if it cannot start."""
    rclpy.init(args=args)
    try:
        try:
            node = SegmenterNode()
        except STARTUP_ERRORS as error:
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
            return 1
        try:
            rclpy.spin(node)
        except Exception:
            # Ctrl-C shuts the context down from rclpy's signal handler; a message take
            # racing it raises instead of ExternalShutdownException, sometimes just before
            # the shutdown is visible. Stopping is right then; any other error is raised.
            if not _shuts_down_within(node.context, SHUTDOWN_GRACE_S):
                raise
        finally:
            node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
