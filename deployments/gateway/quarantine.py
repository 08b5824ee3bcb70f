"""Poison-request quarantine: inputs that were in flight when model replicas died, per gateway replica.

``calls.call`` (see its docstring for the policy) asks this module three things: is this input held
(refuse it at once), record that a replica died with it in flight (is it held now?), and it ran
fine (forget the suspicion). Inputs are named by ``fingerprint``: a hash of the method and its
arguments, computed only when a replica died under a call or while the method has held inputs, so
the ordinary call path never hashes anything.

Deaths are counted per distinct replica: two identical requests that were on the same replica when
it died are one death, not two (they must not quarantine an innocent input); and only a call sent
after its input became suspect can hold it (``Quarantine.died``). Entries expire after
``ttl_s``; at most ``capacity`` per method are kept (the oldest goes first), so an attacker sending
ever new crashing inputs costs bounded memory.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Suspicion:
    since: float  # when the first replica died with the input in flight
    replicas: set[str] = field(default_factory=set)  # the replicas that died with it


class _Expiring:
    """fingerprint -> suspicion, oldest first, each dropped ``ttl_s`` after it was last set; at most
    ``capacity`` of them."""

    def __init__(self, quarantine: Quarantine) -> None:
        self.q = quarantine
        self.items: collections.OrderedDict[str, tuple[float, _Suspicion]] = collections.OrderedDict()

    def live(self) -> collections.OrderedDict[str, tuple[float, _Suspicion]]:
        now = self.q.clock()
        while self.items and next(iter(self.items.values()))[0] <= now:
            self.items.popitem(last=False)
        return self.items

    def get(self, fingerprint: str) -> _Suspicion | None:
        found = self.live().get(fingerprint)
        return None if found is None else found[1]

    def put(self, fingerprint: str, suspicion: _Suspicion) -> None:
        self.items.pop(fingerprint, None)
        self.items[fingerprint] = (self.q.clock() + self.q.ttl_s, suspicion)
        while len(self.items) > self.q.capacity:
            self.items.popitem(last=False)


class Quarantine:
    """Suspect inputs (a replica died with them in flight) and held ones per method
    (``Deployment.method``), each with a TTL and a size bound.

    An input is held when a replica dies under a call of it that was *sent while it was already
    suspect* (its own retry, or a later request), and that replica is not one that died with it
    before. A call already in flight when its input became suspect is not held for dying: it may be
    an innocent copy on the replica that a poison's retry killed a moment later."""

    def __init__(
        self, *, ttl_s: float = 600.0, capacity: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s, self.capacity, self.clock = ttl_s, capacity, clock
        self._suspects: dict[str, _Expiring] = collections.defaultdict(lambda: _Expiring(self))
        self._held: dict[str, _Expiring] = collections.defaultdict(lambda: _Expiring(self))
        self._retry_slots: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    def configure(self, *, ttl_s: float, capacity: int) -> None:
        self.ttl_s, self.capacity = ttl_s, capacity

    def watching(self, method: str) -> bool:
        """Whether calls of ``method`` must be fingerprinted before they are sent: it has held inputs
        (O(1) while it has none, the normal case)."""
        held = self._held.get(method)
        return held is not None and bool(held.items) and bool(held.live())

    def held(self, method: str, fingerprint: str) -> bool:
        return method in self._held and self._held[method].get(fingerprint) is not None

    def died(self, method: str, fingerprint: str, replica: str, *, sent_at: float) -> bool:
        """Record that ``replica`` died under a call of this input sent at ``sent_at`` (this
        quarantine's clock); True when the input is held now."""
        held = self._held[method].get(fingerprint) if method in self._held else None
        if held is not None:
            held.replicas.add(replica)
            self._held[method].put(fingerprint, held)
            return True
        suspicion = self._suspects[method].get(fingerprint)
        if suspicion is not None and sent_at >= suspicion.since and replica not in suspicion.replicas:
            suspicion.replicas.add(replica)
            self._suspects[method].live().pop(fingerprint, None)
            self._held[method].put(fingerprint, suspicion)
            return True
        suspicion = suspicion or _Suspicion(since=self.clock())
        suspicion.replicas.add(replica)
        self._suspects[method].put(fingerprint, suspicion)
        return False

    def cleared(self, method: str, fingerprint: str) -> None:
        """The input ran fine on another replica: the death it saw was not its doing."""
        if method in self._suspects:
            self._suspects[method].live().pop(fingerprint, None)

    def retry_slot(self, method: str) -> asyncio.Lock:
        """Retries after a replica death go one at a time per method: when a poison's retry kills a
        second replica, no innocent retry dies beside it (and is held for what was not its doing)."""
        return self._retry_slots[method]


def fingerprint(method: str, args: tuple, kwargs: dict) -> str:
    """A content hash of a call: the method and its arguments (arrays, bytes, text, numbers, lists,
    dicts, dataclasses; anything else by its pickle). Run it off the event loop: it reads every byte."""
    digest = hashlib.blake2b(method.encode(), digest_size=16)
    _feed(digest, args)
    _feed(digest, kwargs)
    return digest.hexdigest()


def _feed(digest, value: object) -> None:
    """Type-tagged and length-prefixed, so different structures never hash alike."""
    if value is None or isinstance(value, (bool, int, float)):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, str):
        digest.update(b"s%d:" % len(value) + value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        digest.update(b"b%d:" % len(value))
        digest.update(value)
    elif isinstance(value, np.ndarray) and not value.dtype.hasobject:
        digest.update(f"a{value.dtype.str}{value.shape}:".encode())
        digest.update(np.ascontiguousarray(value).view(np.uint8).reshape(-1))
    elif isinstance(value, (list, tuple)):
        digest.update(b"l%d:" % len(value))
        for item in value:
            _feed(digest, item)
    elif isinstance(value, dict):
        digest.update(b"d%d:" % len(value))
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(f"c{type(value).__qualname__}:".encode())
        for f in dataclasses.fields(value):
            _feed(digest, getattr(value, f.name))
    else:
        digest.update(b"p:" + pickle.dumps(value, protocol=5))
