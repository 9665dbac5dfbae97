"""``moe-perception demo`` on a bag written here, through the node over real DDS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e '.[ros]')")

from moe_perception.cli import main  # noqa: E402
from moe_perception.ros.demo import TILE_WIDTH, TITLE_HEIGHT  # noqa: E402
from moe_perception.uncertainty import MAP_NAMES  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 48x64 frames (rgb8, bgr8 with row padding, mono8) and an unrelated topic."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    image_type = store.types["sensor_msgs/msg/Image"]
    header_type = store.types["std_msgs/msg/Header"]
    time_type = store.types["builtin_interfaces/msg/Time"]
    string_type = store.types["std_msgs/msg/String"]
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("bags") / "camera_bag"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        notes = writer.add_connection("/notes", string_type.__msgtype__, typestore=store)
        images = writer.add_connection(
            "/camera/image_raw", image_type.__msgtype__, typestore=store
        )
        for index, (encoding, channels, padding) in enumerate(
            [("rgb8", 3, 0), ("bgr8", 3, 4), ("mono8", 1, 0)]
        ):
            pixels = rng.integers(0, 256, (48, 64 * channels + padding), dtype=np.uint8)
            stamp = time_type(sec=1000 + index, nanosec=0)
            message = image_type(
                header=header_type(stamp=stamp, frame_id="camera"),
                height=48,
                width=64,
                encoding=encoding,
                is_bigendian=0,
                step=64 * channels + padding,
                data=pixels.reshape(-1),
            )
            time_ns = (1000 + index) * 10**9
            writer.write(images, time_ns, store.serialize_cdr(message, image_type.__msgtype__))
            note = string_type(data=f"frame {index}")
            writer.write(notes, time_ns, store.serialize_cdr(note, string_type.__msgtype__))
    return path


def test_demo_writes_a_mosaic_per_frame_and_a_summary(
    bag: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo_out"
    status = main(
        [
            "demo",
            "--model",
            str(tiny_checkpoint),
            "--bag",
            str(bag),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert str(out.resolve()) in printed.out

    summary = json.loads((out / "summary.json").read_text())
    assert summary["topic"] == "/camera/image_raw"
    assert summary["expert_names"] == ["daylight", "dusk"]
    frames = summary["frames"]
    assert [frame["index"] for frame in frames] == [0, 1, 2]
    for frame in frames:
        assert frame["size"] == [48, 64] and frame["frame_id"] == "camera"
        assert frame["latency_ms"] > 0
        assert 0.0 <= frame["gate_entropy"] <= 1.0
        assert sum(frame["gate_weights"].values()) == pytest.approx(1.0, abs=1e-5)
        assert set(frame["map_means"]) == set(MAP_NAMES)
        assert all(0.0 <= mean <= 1.0 for mean in frame["map_means"].values())
        with PILImage.open(out / frame["mosaic"]) as mosaic:
            # 3x3 tiles, each TILE_WIDTH wide with a title strip above the picture.
            assert mosaic.size == (3 * TILE_WIDTH, 3 * (TILE_WIDTH * 48 // 64 + TITLE_HEIGHT))
    assert sorted(p.name for p in out.glob("*.png")) == [f["mosaic"] for f in frames]


def test_demo_names_a_missing_bag(
    tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["demo", "--model", str(tiny_checkpoint), "--bag", "/nonexistent/bag"])
    assert status == 2
    assert "the demo bag is missing at /nonexistent/bag" in capsys.readouterr().err
