"""The hand-over between subscription callbacks and the inference worker.

Callbacks only store the newest message of their camera; the worker takes every pending
message at once and runs one batch. Memory stays bounded: at most one pending message per
camera, whatever the input rate.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")


class LatestFrames(Generic[Key, Item]):
    """The newest pending item per key; an item replaced before it was taken is dropped.

    Thread-safe: any number of producers, one consumer.
    """

    def __init__(self) -> None:
        self._pending: dict[Key, Item] = {}
        self._condition = threading.Condition()
        self._closed = False

    def put(self, key: Key, item: Item) -> Item | None:
        """Make ``item`` the pending item of ``key``.

        Returns:
            The item it replaced (dropped, never processed), else ``None``.
        """
        with self._condition:
            replaced = self._pending.get(key)
            self._pending[key] = item
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> dict[Key, Item]:
        """Wait until something is pending, then take everything pending.

        Returns:
            key -> item in arrival order of the keys; empty after a timeout or once closed.
        """
        with self._condition:
            self._condition.wait_for(lambda: self._pending or self._closed, timeout)
            if self._closed:
                return {}
            taken, self._pending = self._pending, {}
            return taken

    def close(self) -> None:
        """Wake the consumer for good; later ``take`` calls return at once, empty."""
        with self._condition:
            self._closed = True
            self._pending.clear()
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._condition:
            return len(self._pending)
