"""A2D2 semantic-segmentation scenes to rosbag2 (``moe-perception a2d2-to-bag``).

Layout read (Audi's ``camera_lidar_semantic`` download)::

    A2D2_ROOT/
      class_list.json                  {"#rrggbb": "Car 1", ...}: 55 colours in order
      cams_lidars.json                 optional sensor configuration (or --sensor-config)
      20180807_145028/                 one folder per scene
        camera/cam_front_center/
          20180807145028_camera_frontcenter_000000091.png
          20180807145028_camera_frontcenter_000000091.json   {"cam_tstamp": <us>, ...}
        label/cam_front_center/
          20180807145028_label_frontcenter_000000091.png     colour-coded classes

Label ids (``label_ids``): ``paper38`` (default) and ``coarse`` are the class ids of
:mod:`moe_perception.data.a2d2` (the 38 categories, or 12 driving classes with ego car,
blurred area and rain dirt as 255), the ids a model trained on A2D2 predicts;
``colors`` is the index of a pixel's colour in ``class_list.json``, in the file's order
(0..54 for the released list). A colour not in the list stops the conversion. The bag
records the names of the ids (custom_data ``moe_perception.label_classes``), so
``process-bag`` scores a model whose classes are those names.

CameraInfo: the semantic images are the recorded (distorted) images, so ``K`` is
``CamMatrixOriginal`` and ``D`` is ``Distortion``: ``plumb_bob`` for ``Telecam`` lenses
(k1, k2, p1, p2, k3), ``equidistant`` (OpenCV's fisheye model, k1..k4) for ``Fisheye``.
If an image is not at the configured ``Resolution`` ([width, height]), K is scaled to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from moe_perception.bags.bagfile import BagFormat
from moe_perception.bags.convert import (
    CameraStream,
    ConversionSummary,
    Frame,
    read_image_file,
    write_frames,
)

A2D2LabelIds = Literal["paper38", "coarse", "colors"]
A2D2_LABEL_IDS: tuple[A2D2LabelIds, ...] = ("paper38", "coarse", "colors")
TAI_MINUS_UTC_S = 37  # leap seconds since 2017-01-01 (A2D2 was recorded in 2018-2019)
_IMAGE_NAME = re.compile(r"^(?P<ts>\d+)_camera_(?P<cam>[a-z]+)_(?P<id>\d+)\.png$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class A2D2BagOptions:
    """What ``a2d2-to-bag`` writes.

    Attributes:
        scenes: scene folder names (``None``: all).
        cameras: camera names, ``front_center`` or ``cam_front_center`` (``None``: all).
        sensor_config: ``cams_lidars.json``; ``None`` uses ``A2D2_ROOT/cams_lidars.json``
            when it exists.
        camera_info: write CameraInfo when a sensor configuration is found.
        labels: write the label topics.
        label_ids: what the label ids mean: ``paper38``, ``coarse`` or ``colors``.
        tai_to_utc: subtract 37 s from ``cam_tstamp`` (TAI) to get UTC.
        namespace: topic prefix, e.g. ``/a2d2``: topics are
            ``<namespace>/cam_<name>/{image_raw,camera_info,labels}``.
        frame_prefix: frame ids are ``<frame_prefix>cam_<name>_optical_frame``.
        bag_format: storage, metadata version, compression.
    """

    scenes: tuple[str, ...] | None = None
    cameras: tuple[str, ...] | None = None
    sensor_config: Path | None = None
    camera_info: bool = True
    labels: bool = True
    label_ids: A2D2LabelIds = "paper38"
    tai_to_utc: bool = False
    namespace: str = ""
    frame_prefix: str = ""
    bag_format: BagFormat = field(default_factory=BagFormat)


@dataclass(frozen=True)
class CameraCalibration:
    """One camera of ``cams_lidars.json``."""

    matrix: np.ndarray  # (3, 3) K of the recorded images
    distortion: tuple[float, ...]
    model: str  # plumb_bob or equidistant
    width: int
    height: int


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"file missing: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"malformed JSON in {path}: {error}") from error


def read_class_list(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and their colours (N, 3) uint8, in ``class_list.json`` order.

    Raises:
        FileNotFoundError: missing; ValueError: not a {"#rrggbb": name} object of at most
            255 distinct colours.
    """
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f'{path}: expected a non-empty object {{"#rrggbb": name}}')
    if len(data) > 255:
        raise ValueError(f"{path}: {len(data)} classes do not fit mono8 ids 0..254")
    colors = []
    for key, name in data.items():
        if not isinstance(key, str) or not _COLOR.match(key) or not isinstance(name, str):
            raise ValueError(f'{path}: entry {key!r}: {name!r} is not "#rrggbb": name')
        colors.append([int(key[i : i + 2], 16) for i in (1, 3, 5)])
    table = np.asarray(colors, dtype=np.uint8)
    if len(np.unique(table, axis=0)) != len(table):
        raise ValueError(f"{path}: a colour appears twice")
    return tuple(data.values()), table


def _pack(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) -> 0xRRGGBB int32 (...)."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def color_label_to_ids(rgb: np.ndarray, colors: np.ndarray, path: Path) -> np.ndarray:
    """A colour-coded label (H, W, 3) -> class ids uint8 (H, W): the colour's index.

    Raises:
        ValueError: a colour not in ``colors`` (naming ``path``, the colour and its count).
    """
    codes = _pack(rgb)
    table = _pack(colors)
    order = np.argsort(table)
    position = np.searchsorted(table[order], codes).clip(0, len(table) - 1)
    found = table[order][position] == codes
    if not found.all():
        unknown, counts = np.unique(codes[~found], return_counts=True)
        listed = ", ".join(f"#{c:06x} ({n} px)" for c, n in zip(unknown[:5], counts[:5]))
        raise ValueError(
            f"label {path}: {len(unknown)} colour(s) not in class_list.json: {listed}"
        )
    return order[position].astype(np.uint8)


def label_decoder(
    class_list: Path, label_ids: A2D2LabelIds
) -> tuple[tuple[str, ...], Callable[[Path], np.ndarray]]:
    """The class names of the label ids, and a function reading a label file as ids.

    Raises:
        FileNotFoundError, ValueError: a missing or malformed ``class_list.json``.
    """
    if label_ids not in A2D2_LABEL_IDS:
        raise ValueError(f"unknown label ids {label_ids!r}; choose from {A2D2_LABEL_IDS}")
    names, colors = read_class_list(class_list)
    # index in class_list.json -> written id
    lookup = np.arange(len(colors), dtype=np.uint8)
    if label_ids != "colors":
        from moe_perception.data import a2d2 as dataset

        table = dataset.color_table(dataset.read_class_list(class_list), label_ids)
        lookup = np.array([table.get(int(c), 255) for c in _pack(colors)], dtype=np.uint8)
        names = dataset.A2D2_CATEGORIES if label_ids == "paper38" else dataset.A2D2_COARSE_CLASSES

    def read_label(path: Path) -> np.ndarray:
        return lookup[color_label_to_ids(read_image_file(path), colors, path)]

    return tuple(names), read_label


def read_sensor_config(path: Path) -> dict[str, CameraCalibration]:
    """The cameras of ``cams_lidars.json`` by name (``front_center``, ...).

    Raises:
        FileNotFoundError: missing; ValueError: a camera entry without a valid
            ``CamMatrixOriginal``, ``Distortion``, ``Resolution`` or ``Lens`` (naming it).
    """
    data = _load_json(path)
    cameras = data.get("cameras") if isinstance(data, dict) else None
    if not isinstance(cameras, dict):
        raise ValueError(f'{path}: no "cameras" object')
    result = {}
    for name, camera in cameras.items():
        where = f"{path}: camera {name!r}"
        try:
            matrix = np.asarray(camera["CamMatrixOriginal"], dtype=np.float64)
            distortion = np.asarray(camera["Distortion"], dtype=np.float64).reshape(-1)
            width, height = (int(v) for v in camera["Resolution"])
            lens = camera["Lens"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{where}: needs CamMatrixOriginal, Distortion, Resolution [w, h] and Lens "
                f"({type(error).__name__}: {error})"
            ) from error
        if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
            raise ValueError(f"{where}: CamMatrixOriginal is not a finite 3x3 matrix")
        if not np.isfinite(distortion).all() or width <= 0 or height <= 0:
            raise ValueError(f"{where}: non-finite Distortion or non-positive Resolution")
        if lens == "Fisheye":
            if distortion.size != 4:
                raise ValueError(f"{where}: a Fisheye lens needs 4 coefficients (k1..k4)")
            model = "equidistant"
        elif lens == "Telecam":
            if distortion.size not in (4, 5):
                raise ValueError(f"{where}: a Telecam lens needs 4 or 5 coefficients")
            # plumb_bob always has five: a missing k3 is zero.
            distortion = np.pad(distortion, (0, 5 - distortion.size))
            model = "plumb_bob"
        else:
            raise ValueError(f"{where}: unknown Lens {lens!r} (expected Telecam or Fisheye)")
        result[str(name)] = CameraCalibration(
            matrix, tuple(float(d) for d in distortion), model, width, height
        )
    return result


def _camera_name(folder: str) -> str:
    """``cam_front_center`` -> ``front_center``."""
    return folder.removeprefix("cam_")


def _cam_tstamp_ns(json_path: Path, tai_to_utc: bool) -> int:
    data = _load_json(json_path)
    value = data.get("cam_tstamp") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{json_path}: cam_tstamp must be a non-negative integer (us)")
    stamp_ns = value * 1000 - (TAI_MINUS_UTC_S * 1_000_000_000 if tai_to_utc else 0)
    if stamp_ns < 0:
        raise ValueError(f"{json_path}: cam_tstamp {value} us is before the epoch in UTC")
    return stamp_ns


def scan_frames(root: Path, options: A2D2BagOptions) -> list[Frame]:
    """Every selected camera frame, with its stamp and label path.

    Raises:
        FileNotFoundError: a missing JSON or label; ValueError: an unknown scene or
            camera, an image name not in A2D2's pattern, or no frames.
    """
    scenes = sorted(p for p in root.iterdir() if (p / "camera").is_dir())
    if options.scenes is not None:
        known = {p.name for p in scenes}
        missing = [s for s in options.scenes if s not in known]
        if missing:
            raise ValueError(f"scenes not found in {root}: {missing}; have {sorted(known)}")
        scenes = [p for p in scenes if p.name in options.scenes]
    if not scenes:
        raise ValueError(f"no scene folders (with a camera/ folder) in {root}")
    wanted = None if options.cameras is None else {_camera_name(c) for c in options.cameras}
    namespace = options.namespace.rstrip("/")
    if namespace and not namespace.startswith("/"):
        namespace = "/" + namespace
    frames: list[Frame] = []
    seen_cameras: set[str] = set()
    for scene in scenes:
        for folder in sorted(p for p in (scene / "camera").iterdir() if p.is_dir()):
            camera = _camera_name(folder.name)
            seen_cameras.add(camera)
            if wanted is not None and camera not in wanted:
                continue
            base = f"{namespace}/cam_{camera}"
            stream = CameraStream(
                image_topic=f"{base}/image_raw",
                frame_id=f"{options.frame_prefix}cam_{camera}_optical_frame",
                label_topic=f"{base}/labels" if options.labels else None,
                info_topic=f"{base}/camera_info",
            )
            for image in sorted(folder.glob("*.png")):
                match = _IMAGE_NAME.match(image.name)
                if match is None:
                    raise ValueError(
                        f"{image}: not an A2D2 camera image name "
                        "(<timestamp>_camera_<camera>_<id>.png)"
                    )
                label = None
                if options.labels:
                    label_name = f"{match['ts']}_label_{match['cam']}_{match['id']}.png"
                    label = scene / "label" / folder.name / label_name
                    if not label.is_file():
                        raise FileNotFoundError(f"label missing for {image}: {label}")
                stamp = _cam_tstamp_ns(image.with_suffix(".json"), options.tai_to_utc)
                frames.append(Frame(stamp, stream, image, label))
    if wanted is not None and (unknown := sorted(wanted - seen_cameras)):
        raise ValueError(f"cameras not found in {root}: {unknown}; have {sorted(seen_cameras)}")
    if not frames:
        raise ValueError(f"no camera images in the selected scenes of {root}")
    return frames


def a2d2_to_bag(
    root: str | Path, out: str | Path, options: A2D2BagOptions, progress: bool | None = None
) -> ConversionSummary:
    """Write A2D2 scenes as a rosbag2, time-ordered by ``cam_tstamp``.

    Raises:
        FileNotFoundError, ValueError: bad input, naming the file; FileExistsError: ``out``
            exists.
    """
    from moe_perception.bags import messages

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"A2D2 folder not found: {root}")
    names, read_label = None, None
    if options.labels:
        names, read_label = label_decoder(root / "class_list.json", options.label_ids)
    config_path = options.sensor_config
    if config_path is None and (root / "cams_lidars.json").is_file():
        config_path = root / "cams_lidars.json"
    calibrations = (
        read_sensor_config(Path(config_path))
        if options.camera_info and config_path is not None
        else None
    )
    frames = scan_frames(root, options)
    camera_of = {f.stream: _camera_name(f.image_path.parent.name) for f in frames}
    if calibrations is not None:
        missing = sorted(set(camera_of.values()) - set(calibrations))
        if missing:
            raise ValueError(f"{config_path} has no calibration for cameras {missing}")

    def camera_info(stream: CameraStream, header: Any, width: int, height: int) -> Any:
        calibration = calibrations[camera_of[stream]]
        matrix = calibration.matrix.copy()
        # Intrinsics scale with the image; normalised distortion does not.
        matrix[0] *= width / calibration.width
        matrix[1] *= height / calibration.height
        return messages.make_camera_info(
            header, width, height, matrix, calibration.distortion, calibration.model
        )

    return write_frames(
        out,
        frames,
        options.bag_format,
        read_label=read_label,
        camera_info=camera_info if calibrations is not None else None,
        label_classes=names,
        progress=progress,
    )
