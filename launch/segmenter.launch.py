"""Launch the moe_perception segmenter node, optionally with rviz2 and a bag replay.

    ros2 launch moe_perception segmenter.launch.py
    ros2 launch moe_perception segmenter.launch.py image_topics:=front/image_raw,rear/image_raw
    ros2 launch moe_perception segmenter.launch.py use_rviz:=true bag:=/path/to/bag

Every node setting lives in the parameters file (default: the package's
config/segmenter.yaml); the arguments model_path, device and image_topics override it
only when given.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

PACKAGE = "moe_perception"


def parse_topics(text: str) -> list[str]:
    """``a,b``, ``[a, b]`` or ``['a', 'b']`` -> ``["a", "b"]``."""
    inner = text.strip().removeprefix("[").removesuffix("]")
    return [part.strip().strip("'\"") for part in inner.split(",") if part.strip().strip("'\"")]


def node_overrides(model_path: str, device: str, image_topics: str, bag: str) -> dict:
    """Parameters that override the parameters file: only the arguments given."""
    overrides: dict[str, object] = {}
    if model_path:
        overrides["model_path"] = model_path
    if device:
        overrides["device"] = device
    topics = parse_topics(image_topics)
    if topics:
        overrides["image_topics"] = topics
    if bag:
        # The node's clock follows the bag, so stamp-to-publish latency stays meaningful.
        overrides["use_sim_time"] = True
    return overrides


def launch_segmenter(context: LaunchContext) -> list:
    """The node (and the bag player) once the arguments' values are known."""
    values = {
        name: LaunchConfiguration(name).perform(context)
        for name in ("model_path", "device", "image_topics", "bag")
    }
    profile = LaunchConfiguration("dds_profile").perform(context)
    # Fast DDS reads it; other middlewares ignore it.
    environment = {"FASTDDS_DEFAULT_PROFILES_FILE": profile} if profile else {}
    actions: list = [
        Node(
            package=PACKAGE,
            executable="segmenter_node",
            name="segmenter",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), node_overrides(**values)],
            output="screen",
            emulate_tty=True,
            additional_env=environment,
        )
    ]
    if values["bag"]:
        actions.append(
            ExecuteProcess(
                cmd=["ros2", "bag", "play", values["bag"], "--clock"],
                output="screen",
                additional_env=environment,
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "segmenter.yaml"]),
                description="YAML file with the node's parameters",
            ),
            DeclareLaunchArgument(
                "model_path",
                default_value="",
                description="checkpoint (empty: the params file's, else the shipped model)",
            ),
            DeclareLaunchArgument(
                "device",
                default_value="",
                description="auto, cpu, cuda or cuda:N (empty: the params file's)",
            ),
            DeclareLaunchArgument(
                "image_topics",
                default_value="",
                description="comma-separated input image topics (empty: the params file's)",
            ),
            DeclareLaunchArgument(
                "namespace", default_value="", description="namespace of the node"
            ),
            DeclareLaunchArgument(
                "use_rviz",
                default_value="false",
                description="start rviz2 with the package's config/segmenter.rviz",
            ),
            DeclareLaunchArgument(
                "bag",
                default_value="",
                description="rosbag2 to play with `ros2 bag play --clock` beside the node",
            ),
            DeclareLaunchArgument(
                "dds_profile",
                default_value=EnvironmentVariable(
                    "FASTDDS_DEFAULT_PROFILES_FILE",
                    default_value=PathJoinSubstitution(
                        [share, "config", "fastdds_large_images.xml"]
                    ),
                ),
                description="Fast DDS XML profile for the node and the bag player (default: "
                "$FASTDDS_DEFAULT_PROFILES_FILE, else the package's fastdds_large_images.xml, "
                "whose larger shared-memory segment carries the big outputs; empty: none)",
            ),
            OpaqueFunction(function=launch_segmenter),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", PathJoinSubstitution([share, "config", "segmenter.rviz"])],
                condition=IfCondition(LaunchConfiguration("use_rviz")),
                output="screen",
            ),
        ]
    )
