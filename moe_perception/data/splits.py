"""Rules that narrow a dataset to a subset: by sequence, by file list, by position.

A *fraction* ``(a, b)`` keeps, within each sequence (recording, scene or city) taken in
file-name order, the frames at positions ``round(a n) <= i < round(b n)``. Complementary
fractions such as ``(0, 0.8)`` and ``(0.8, 1)`` partition every sequence exactly, and
keep neighbouring (strongly correlated) frames on the same side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")


def check_fraction(fraction: Sequence[float] | None) -> tuple[float, float] | None:
    """Validate a fraction: two numbers with 0 <= a < b <= 1 (``None`` passes)."""
    if fraction is None:
        return None
    if len(fraction) != 2:
        raise ValueError(f"fraction must be two numbers [start, stop], got {list(fraction)}")
    start, stop = float(fraction[0]), float(fraction[1])
    if not 0.0 <= start < stop <= 1.0:
        raise ValueError(f"fraction must satisfy 0 <= start < stop <= 1, got {list(fraction)}")
    return start, stop


def select_fraction(
    items: Sequence[Item],
    sequence_of: Callable[[Item], str],
    name_of: Callable[[Item], str],
    fraction: Sequence[float] | None,
) -> list[Item]:
    """Keep the ``fraction`` of each sequence's frames, in file-name order.

    Args:
        items: the frames.
        sequence_of: the sequence (domain) of a frame.
        name_of: the name that orders a sequence's frames.
        fraction: ``(start, stop)`` in [0, 1]; ``None`` keeps everything.

    Returns:
        The kept frames, in their original order.
    """
    checked = check_fraction(fraction)
    if checked is None:
        return list(items)
    start, stop = checked
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(sequence_of(item), []).append(index)
    kept: set[int] = set()
    for indices in groups.values():
        ordered = sorted(indices, key=lambda i: name_of(items[i]))
        n = len(ordered)
        kept.update(ordered[round(start * n) : round(stop * n)])
    return [item for index, item in enumerate(items) if index in kept]
