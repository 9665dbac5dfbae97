"""The package metadata that colcon, catkin_pkg and pip read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_valid_format_3() -> None:
    catkin_pkg = pytest.importorskip("catkin_pkg.package", reason="catkin_pkg not installed")
    package = catkin_pkg.parse_package(ROOT / "package.xml")
    package.validate()
    assert package.package_format == 3
    assert package.name == "moe_perception"
    assert package.get_build_type() == "ament_python"
    exec_depends = {d.name for d in package.exec_depends}
    assert {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs"} <= exec_depends


def test_versions_agree() -> None:
    xml_version = re.search(r"<version>(.+)</version>", (ROOT / "package.xml").read_text())[1]
    setup_version = re.search(r'version="(.+?)"', (ROOT / "setup.py").read_text())[1]
    from moe_perception import __version__

    assert xml_version == setup_version == __version__


def test_ament_resource_marker_exists() -> None:
    assert (ROOT / "resource" / "moe_perception").is_file()


def test_torch_is_pinned_exactly() -> None:
    setup = (ROOT / "setup.py").read_text()
    assert '"torch==2.14.1"' in setup and '"torchvision==0.29.1"' in setup


def test_core_never_imports_rclpy() -> None:
    core = ["model", "uncertainty", "metrics", "data", "training"]
    offenders = [
        str(path.relative_to(ROOT))
        for part in core
        for path in (ROOT / "moe_perception" / part).rglob("*.py")
        if re.search(r"^\s*(import|from)\s+rclpy", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []
