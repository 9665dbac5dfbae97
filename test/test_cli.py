"""The ``moe-perception`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moe_perception.cli import main


def test_info_prints_the_metadata(tiny_checkpoint: Path, capsys) -> None:
    assert main(["info", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "moe-simple-k2" in out
    assert "daylight, dusk" in out
    assert "64x96" in out


def test_info_json(tiny_checkpoint: Path, capsys) -> None:
    assert main(["info", "--json", str(tiny_checkpoint)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["arch"]["num_experts"] == 2
    assert data["parameters"] > 1_000_000


def test_info_on_a_bad_file_is_one_clear_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moe-perception info: error:") and "bad.pt" in err
    assert "Traceback" not in err


def test_unknown_subcommand_exits_with_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2
