"""Where installed files live: the shipped model, configs, launch files, the sample."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "moe_perception"
DEFAULT_MODEL_NAME = "moe_camvid_k2.pt"


def share_dirs() -> list[Path]:
    """Candidate share directories, most specific first.

    The ament index (colcon or apt installs), ``<prefix>/share/moe_perception`` (pip
    installs with data files) and the source checkout (editable installs, tests).
    """
    candidates: list[Path] = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)))
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    except ImportError:
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE)
    candidates.append(Path(__file__).resolve().parent.parent)
    return [path for path in candidates if path.is_dir()]


def find_share_file(relative: str) -> Path:
    """The first existing ``<share>/<relative>``.

    Raises:
        FileNotFoundError: naming every place that was searched.
    """
    searched = []
    for share in share_dirs():
        path = share / relative
        if path.exists():
            return path
        searched.append(str(path))
    raise FileNotFoundError(f"{relative} not found; searched: {', '.join(searched) or 'nothing'}")


def default_model_path() -> Path:
    """The shipped default model (``models/moe_camvid_k2.pt``)."""
    return find_share_file(f"models/{DEFAULT_MODEL_NAME}")
