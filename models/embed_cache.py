"""A bounded LRU cache of embeddings keyed by (model id, content hash). Thread-safe, Ray-free.

Re-indexing the same photo (or embedding the same query text again) skips the forward pass.
Values are copied in and out, so a caller that edits an array it got never changes the cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

Key = tuple[str, str]


class EmbedCache:
    """LRU over ``capacity`` entries; ``capacity=0`` disables it (every ``get`` misses)."""

    def __init__(self, *, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be a non-negative integer, got {capacity!r}")
        self.capacity = capacity
        self._entries: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, content_hash: str) -> np.ndarray | None:
        """A copy of the cached embedding (now most recently used), or None."""
        with self._lock:
            value = self._entries.get((model, content_hash))
            if value is None:
                return None
            self._entries.move_to_end((model, content_hash))
        return value.copy()

    def put(self, model: str, content_hash: str, embedding: np.ndarray) -> None:
        """Store a copy of ``embedding``, evicting the least recently used entry when full."""
        if self.capacity == 0:
            return
        value = np.array(embedding, copy=True)
        value.setflags(write=False)
        with self._lock:
            self._entries[(model, content_hash)] = value
            self._entries.move_to_end((model, content_hash))
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
