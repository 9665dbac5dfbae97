"""The node's parameters: names, defaults, descriptions, ranges and checks.

Plain data without rclpy, so ``config/segmenter.yaml``, the docs and the node are checked
against one table. :mod:`moe_perception.ros.node` turns each entry into a declared
parameter with a ``ParameterDescriptor``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from moe_perception.render import COLOR_MAPS, ColorMap
from moe_perception.segmenter import OutputResolution
from moe_perception.uncertainty import MAP_NAMES

ParameterValue = str | bool | int | float | tuple[str, ...]
InputTransport = Literal["raw", "compressed"]
Reliability = Literal["best_effort", "reliable"]

INPUT_TRANSPORTS: tuple[InputTransport, ...] = ("raw", "compressed")
RELIABILITIES: tuple[Reliability, ...] = ("best_effort", "reliable")
OUTPUT_RESOLUTIONS: tuple[OutputResolution, ...] = ("input", "network")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _check_device(value: ParameterValue) -> str | None:
    if isinstance(value, str) and _DEVICE.fullmatch(value):
        return None
    return f"{value!r} is not a device: use auto, cpu, cuda or cuda:N"


def _check_topics(value: ParameterValue) -> str | None:
    if not isinstance(value, tuple) or not value:
        return "give at least one image topic"
    if any(not topic for topic in value):
        return "an image topic is empty"
    if len(set(value)) != len(value):
        return f"image topics repeat: {list(value)}"
    return None


def _check_maps(value: ParameterValue) -> str | None:
    unknown = sorted(set(value) - set(MAP_NAMES)) if isinstance(value, tuple) else [value]
    if unknown:
        return f"unknown uncertainty maps {unknown}; choose from {list(MAP_NAMES)}"
    if len(set(value)) != len(value):  # type: ignore[arg-type]
        return f"uncertainty maps repeat: {list(value)}"  # type: ignore[arg-type]
    return None


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter.

    Attributes:
        name: parameter name.
        default: its value when neither the YAML nor the command line sets it.
        description: what it does, shown by ``ros2 param describe``.
        read_only: cannot change once the node runs.
        choices: the allowed strings, if it is a string with a fixed set of values.
        value_range: inclusive (low, high) of a number.
        check: returns an error message for a bad value, ``None`` for a good one.
    """

    name: str
    default: ParameterValue
    description: str
    read_only: bool = True
    choices: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    check: Callable[[ParameterValue], str | None] | None = None

    def validate(self, value: ParameterValue) -> str | None:
        """An error message naming the parameter, or ``None`` if ``value`` is allowed."""
        problem = None
        if self.choices and value not in self.choices:
            problem = f"{value!r} is not one of {list(self.choices)}"
        elif self.value_range is not None and not (
            self.value_range[0] <= value <= self.value_range[1]  # type: ignore[operator]
        ):
            problem = f"{value} is outside [{self.value_range[0]}, {self.value_range[1]}]"
        elif self.check is not None:
            problem = self.check(value)
        return f"parameter {self.name}: {problem}" if problem else None


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "model_path",
        "",
        "Checkpoint (.pt) to load; empty: the shipped default model "
        "(share/moe_perception/models/moe_camvid_k2.pt).",
    ),
    ParameterSpec(
        "device",
        "auto",
        "Where the network runs: auto (the first CUDA device if any, else the CPU), cpu, "
        "cuda or cuda:N.",
        check=_check_device,
    ),
    ParameterSpec("fp16", False, "Half-precision inference on CUDA (ignored on the CPU)."),
    ParameterSpec(
        "cpu_threads",
        0,
        "Threads torch may use on the CPU; 0 keeps torch's default.",
        value_range=(0, 256),
    ),
    ParameterSpec(
        "image_topics",
        ("camera/image_raw",),
        "Input image topics, one per camera; all cameras are served by one batched "
        "inference. Outputs go to <camera namespace>/segmentation/<output>.",
        check=_check_topics,
    ),
    ParameterSpec(
        "input_transport",
        "raw",
        "raw: subscribe to sensor_msgs/Image on each topic; compressed: to "
        "sensor_msgs/CompressedImage (JPEG or PNG) on <topic>/compressed.",
        choices=INPUT_TRANSPORTS,
    ),
    ParameterSpec(
        "input_reliability",
        "best_effort",
        "Reliability QoS of the image subscriptions (sensor-data profile: best_effort).",
        choices=RELIABILITIES,
    ),
    ParameterSpec(
        "input_depth",
        1,
        "History depth of the image subscriptions; the node keeps only the newest frame "
        "per camera anyway.",
        value_range=(1, 1000),
    ),
    ParameterSpec(
        "output_reliability",
        "reliable",
        "Reliability QoS of every output publisher.",
        choices=RELIABILITIES,
    ),
    ParameterSpec(
        "output_depth", 1, "History depth of every output publisher.", value_range=(1, 100)
    ),
    ParameterSpec(
        "uncertainty_maps",
        MAP_NAMES,
        "Which uncertainty/<map> topics to publish (32FC1 in [0, 1]).",
        check=_check_maps,
    ),
    ParameterSpec(
        "confidence_map",
        "predictive_entropy",
        "The uncertainty map u behind confidence (mono8, 255*(1-u)) and uncertainty_color.",
        read_only=False,
        choices=MAP_NAMES,
    ),
    ParameterSpec(
        "colormap",
        "turbo",
        "Colour map of uncertainty_color.",
        read_only=False,
        choices=COLOR_MAPS,
    ),
    ParameterSpec(
        "overlay_alpha",
        0.5,
        "Weight of the class or uncertainty colours blended over the image in overlay "
        "and uncertainty_color.",
        read_only=False,
        value_range=(0.0, 1.0),
    ),
    ParameterSpec(
        "output_resolution",
        "input",
        "input: outputs at each image's size; network: at the network's input size "
        "(cheaper, aspect ratio kept).",
        read_only=False,
        choices=OUTPUT_RESOLUTIONS,
    ),
    ParameterSpec(
        "diagnostics_period",
        1.0,
        "Seconds between /diagnostics messages.",
        value_range=(0.05, 60.0),
    ),
    ParameterSpec(
        "error_log_period",
        5.0,
        "At most one error log per camera per this many seconds (bad input); every "
        "rejection is still counted in /diagnostics.",
        read_only=False,
        value_range=(0.0, 3600.0),
    ),
)
PARAMETERS_BY_NAME: dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class NodeSettings:
    """The values of :data:`PARAMETERS`, one field each; replaced whole on a change."""

    model_path: str
    device: str
    fp16: bool
    cpu_threads: int
    image_topics: tuple[str, ...]
    input_transport: InputTransport
    input_reliability: Reliability
    input_depth: int
    output_reliability: Reliability
    output_depth: int
    uncertainty_maps: tuple[str, ...]
    confidence_map: str
    colormap: ColorMap
    overlay_alpha: float
    output_resolution: OutputResolution
    diagnostics_period: float
    error_log_period: float


# Read-only parameters the node sets from the loaded model; overrides are ignored.
MODEL_PARAMETERS: dict[str, str] = {
    "class_names": "Class names of the loaded model, indexed by the ids in labels.",
    "class_colors": "Class colours of the loaded model as flat R, G, B triples, one per class.",
    "expert_names": "Expert names of the loaded model, in the order of gate_weights.",
}
