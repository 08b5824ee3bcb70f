"""Splitting work into fixed-size batches (feature extraction, vector-store writes, bulk uploads)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of ``items`` of at most ``size`` elements, in order."""
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]
