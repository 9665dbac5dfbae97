"""The bag subcommands of ``moe-perception``: parsing, exit status, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from moe_perception.cli import main


def test_registering_the_commands_imports_nothing_heavy() -> None:
    code = (
        "import sys; import moe_perception.cli as c; c.build_parser(); "
        "import moe_perception.bags.cli; "
        "print(sorted(m for m in ('torch', 'rclpy', 'rosbags', 'PIL') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["a2d2-to-bag", "camvid-to-bag", "process-bag", "play"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"moe-perception {command}" in capsys.readouterr().out


def test_a2d2_then_process_bag(
    a2d2_tree: Any,
    tiny_checkpoint: Path,
    bags: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bag = tmp_path / "a2d2_bag"
    argv = ["a2d2-to-bag", str(a2d2_tree.root), str(bag), "--cameras", "front_center"]
    assert main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {bag}: 12 messages" in out
    assert "/cam_front_center/camera_info: 4" in out
    # Again: refused, one line, exit status 2, the bag untouched.
    before = sorted((p.name, p.stat().st_size) for p in bag.iterdir())
    assert main([*argv, "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert (
        error
        == f"moe-perception a2d2-to-bag: error: output {bag} exists already; not overwriting it\n"
    )
    assert sorted((p.name, p.stat().st_size) for p in bag.iterdir()) == before

    processed = tmp_path / "processed"
    argv = ["process-bag", str(bag), str(processed), "--checkpoint", str(tiny_checkpoint)]
    argv += ["--device", "cpu", "--outputs", "labels", "gate_entropy", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "/cam_front_center/image_raw: 4 frames segmented" in out
    # The A2D2 labels have the 38 A2D2 categories, the model CamVid's 11 classes.
    assert "/cam_front_center/labels not scored: its 38 classes are not the model's 11" in out
    topics = {
        t["topic_metadata"]["name"]: t["message_count"]
        for t in bags.metadata(processed)["topics_with_message_count"]
    }
    assert topics == {
        "/cam_front_center/image_raw": 4,
        "/cam_front_center/camera_info": 4,
        "/cam_front_center/labels": 4,
        "/cam_front_center/segmentation/labels": 4,
        "/cam_front_center/segmentation/gate_entropy": 4,
    }


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notabag").mkdir()
    assert main(["process-bag", str(tmp_path / "notabag"), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("moe-perception process-bag: error: ")
    assert "metadata.yaml is missing" in error
    assert error.count("\n") == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "class_list.json").write_text(json.dumps({"#ff0000": "Car 1"}))
    assert main(["a2d2-to-bag", str(bad), str(tmp_path / "o")]) == 2
    assert "no scene folders" in capsys.readouterr().err
    assert (
        main(["camvid-to-bag", str(tmp_path / "nope"), str(tmp_path / "o"), "--sequence", "x"])
        == 2
    )
    assert "CamVid folder not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists()
