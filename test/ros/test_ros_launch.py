"""The launch file with launch_ros (a ROS 2 installation); skipped where it is absent."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

launch_ros = pytest.importorskip(
    "launch_ros",
    reason="launch_ros is not installed: ROS 2 from PyPI wheels has no launch; "
    "these tests run on a ROS 2 installation",
)

from launch.actions import DeclareLaunchArgument, ExecuteProcess  # noqa: E402

from launch import LaunchContext, LaunchDescription  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "segmenter.launch.py"


@pytest.fixture(scope="module")
def launch_file() -> ModuleType:
    spec = importlib.util.spec_from_file_location("segmenter_launch", LAUNCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_description_declares_every_argument(launch_file: ModuleType) -> None:
    description = launch_file.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    arguments = {
        entity.name: entity
        for entity in description.entities
        if isinstance(entity, DeclareLaunchArgument)
    }
    assert set(arguments) == {
        "params_file",
        "model_path",
        "device",
        "image_topics",
        "namespace",
        "use_rviz",
        "bag",
        "dds_profile",
    }
    assert all(argument.description for argument in arguments.values())


def test_only_given_arguments_override_the_parameters_file(launch_file: ModuleType) -> None:
    assert launch_file.node_overrides("", "", "", "") == {}
    assert launch_file.node_overrides("/m.pt", "cpu", "[a/image_raw, 'b/image_raw']", "") == {
        "model_path": "/m.pt",
        "device": "cpu",
        "image_topics": ["a/image_raw", "b/image_raw"],
    }
    assert launch_file.node_overrides("", "", "", "/bag")["use_sim_time"] is True


@pytest.mark.parametrize("bag", ["", "/data/bag"])
def test_the_node_starts_with_a_bag_player_only_when_asked(
    launch_file: ModuleType, bag: str
) -> None:
    context = LaunchContext()
    context.launch_configurations.update(
        {
            "params_file": "/share/config/segmenter.yaml",
            "model_path": "",
            "device": "",
            "image_topics": "cam/image_raw",
            "namespace": "",
            "use_rviz": "false",
            "bag": bag,
            "dds_profile": "/share/config/fastdds_large_images.xml",
        }
    )
    actions = launch_file.launch_segmenter(context)
    assert isinstance(actions[0], launch_ros.actions.Node)
    assert len(actions) == (2 if bag else 1)
    if bag:
        assert isinstance(actions[1], ExecuteProcess)
