"""Safe bag output and bag input on top of ``rosbags``.

Every command that writes a bag goes through :func:`open_bag_writer`: it refuses an
existing output, writes into a hidden temporary folder beside it and renames that
folder into place only once the bag is complete, so an interrupted or failed run leaves
no bag (and no half-written one) behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Storage = Literal["mcap", "sqlite3"]
Compression = Literal["auto", "none", "zstd"]
BagVersion = Literal[8, 9]
STORAGES: tuple[Storage, ...] = ("mcap", "sqlite3")
COMPRESSIONS: tuple[Compression, ...] = ("auto", "none", "zstd")

# custom_data key holding, per label topic, the class names of its ids (JSON).
LABEL_CLASSES_KEY = "moe_perception.label_classes"


@dataclass(frozen=True)
class BagFormat:
    """How a bag is written.

    Attributes:
        storage: ``mcap`` (default) or ``sqlite3``.
        version: rosbag2 metadata version; 8 is read by Humble and every later release.
        compression: ``zstd`` compresses mcap chunks (any mcap reader decodes them);
            ``auto`` means ``zstd`` for mcap and ``none`` for sqlite3.
    """

    storage: Storage = "mcap"
    version: BagVersion = 8
    compression: Compression = "auto"

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f"unknown storage {self.storage!r}; choose from {STORAGES}")
        if self.version not in (8, 9):
            raise ValueError(f"unsupported rosbag2 metadata version {self.version}; use 8 or 9")
        if self.compression not in COMPRESSIONS:
            raise ValueError(
                f"unknown compression {self.compression!r}; choose from {COMPRESSIONS}"
            )
        if self.compression == "zstd" and self.storage != "mcap":
            raise ValueError("zstd compression needs mcap storage (chunk compression)")

    @property
    def compressed(self) -> bool:
        return self.compression == "zstd" or (
            self.compression == "auto" and self.storage == "mcap"
        )


def check_new_output(path: Path) -> None:
    """Refuse to write ``path`` if anything exists there or its folder is missing.

    Raises:
        FileExistsError: ``path`` exists.
        FileNotFoundError: its parent folder does not exist.
    """
    if path.exists() or path.is_symlink():
        raise FileExistsError(f"output {path} exists already; not overwriting it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")


@contextmanager
def atomic_output_dir(path: str | Path) -> Iterator[Path]:
    """A fresh folder to fill, renamed to ``path`` when the block ends without error.

    The folder lives inside a hidden ``.<name>.partial-*`` folder beside ``path`` (same
    file system, so the final rename is atomic); on any exception, Ctrl-C included, it
    is deleted. Only a process killed outright can leave that hidden folder behind, and
    never anything at ``path``.

    Raises:
        FileExistsError: ``path`` exists (before or, from a concurrent run, after).
    """
    path = Path(path)
    check_new_output(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        # The bag folder keeps its final name inside the staging folder, so the storage
        # file names it records (e.g. <name>.mcap) are right after the rename.
        inner = staging / path.name
        yield inner
        if not inner.is_dir():
            raise RuntimeError(f"nothing was written for {path}")
        # os.rename would replace an empty folder that appeared meanwhile: check first.
        if path.exists() or path.is_symlink():
            raise FileExistsError(f"output {path} appeared while writing; not replacing it")
        os.rename(inner, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def open_bag_writer(
    path: str | Path,
    bag_format: BagFormat,
    custom_data: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """An open ``rosbags`` Writer whose bag appears at ``path`` only when complete.

    Args:
        path: the output bag folder; must not exist.
        bag_format: storage, metadata version and compression.
        custom_data: string pairs stored in the bag's metadata.
    """
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin

    plugin = StoragePlugin.MCAP if bag_format.storage == "mcap" else StoragePlugin.SQLITE3
    with atomic_output_dir(path) as inner:
        writer = Writer(inner, version=bag_format.version, storage_plugin=plugin)
        if bag_format.compressed:
            writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        for key, value in (custom_data or {}).items():
            writer.set_custom_data(key, value)
        with writer:
            yield writer


def label_classes_custom_data(label_classes: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """custom_data recording the class names of each label topic's ids."""
    return {LABEL_CLASSES_KEY: json.dumps({k: list(v) for k, v in label_classes.items()})}


@dataclass(frozen=True)
class BagTopic:
    """A topic of an input bag."""

    name: str
    msgtype: str
    count: int


class InputBag:
    """A rosbag2 folder opened for reading, with errors that name the bag.

    Use as a context manager. ``reader`` is the open ``rosbags`` Reader.

    Raises:
        FileNotFoundError: the bag or its metadata.yaml is missing.
        ValueError: the bag cannot be read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.reader: Any = None
        self.custom_data: dict[str, str] = {}

    def __enter__(self) -> InputBag:
        from rosbags.rosbag2 import Reader
        from rosbags.rosbag2.errors import ReaderError

        if not self.path.exists():
            raise FileNotFoundError(f"bag {self.path} does not exist")
        if not (self.path / "metadata.yaml").is_file():
            raise FileNotFoundError(
                f"{self.path} is not a rosbag2 folder: {self.path / 'metadata.yaml'} is missing"
            )
        self.custom_data = _read_custom_data(self.path / "metadata.yaml")
        try:
            self.reader = Reader(self.path)
            self.reader.open()
        except ReaderError as error:
            raise ValueError(f"cannot read bag {self.path}: {error}") from error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.reader is not None and self.reader.is_open:
            self.reader.close()

    @property
    def topics(self) -> list[BagTopic]:
        counts: dict[tuple[str, str], int] = {}
        for connection in self.reader.connections:
            key = (connection.topic, connection.msgtype)
            counts[key] = counts.get(key, 0) + connection.msgcount
        return [BagTopic(topic, msgtype, n) for (topic, msgtype), n in counts.items()]

    def label_classes(self) -> dict[str, tuple[str, ...]]:
        """Class names per label topic, as written by this package's converters."""
        raw = self.custom_data.get(LABEL_CLASSES_KEY)
        if raw is None:
            return {}
        try:
            parsed = json.loads(raw)
            return {str(k): tuple(str(n) for n in v) for k, v in parsed.items()}
        except (json.JSONDecodeError, AttributeError, TypeError) as error:
            raise ValueError(
                f"bag {self.path}: custom_data {LABEL_CLASSES_KEY} is not a JSON object of "
                f"name lists: {error}"
            ) from error

    def messages(
        self, topics: Sequence[str] | None = None
    ) -> Generator[tuple[Any, int, bytes], None, None]:
        """(connection, log time in ns, CDR bytes), for ``topics`` (``None``: all)."""
        from rosbags.rosbag2.errors import ReaderError

        connections = [c for c in self.reader.connections if topics is None or c.topic in topics]
        if not connections:
            return
        try:
            yield from self.reader.messages(connections=connections)
        except ReaderError as error:
            raise ValueError(f"cannot read bag {self.path}: {error}") from error


def _read_custom_data(metadata_path: Path) -> dict[str, str]:
    import yaml

    try:
        metadata = yaml.safe_load(metadata_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read {metadata_path}: {error}") from error
    info = metadata.get("rosbag2_bagfile_information") if isinstance(metadata, dict) else None
    if not isinstance(info, dict):
        raise ValueError(f"{metadata_path} has no rosbag2_bagfile_information mapping")
    custom = info.get("custom_data") or {}
    if not isinstance(custom, dict):
        raise ValueError(f"{metadata_path}: custom_data is not a mapping")
    return {str(k): str(v) for k, v in custom.items()}
