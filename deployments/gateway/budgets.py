"""In-flight budgets of one gateway replica: a total, and one per route modality.

A request over its modality's budget (or the total) is refused at once with ``Overloaded`` (503 and
Retry-After) instead of queueing, so a flood of transcriptions cannot starve image requests, and
the reverse. Counts live on the replica's event loop, so no lock is needed.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager

from deployments.metrics import observe_inflight
from models.errors import Overloaded


class Budgets:
    def __init__(self, per_modality: dict[str, int], total: int, *, retry_after_s: float = 1.0) -> None:
        self.per_modality, self.total, self.retry_after_s = dict(per_modality), total, retry_after_s
        self.inflight: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()

    def _refuse(self, modality: str, why: str) -> Overloaded:
        self.refused[modality] += 1
        return Overloaded(
            f"the service is at capacity ({why}); retry after {self.retry_after_s:g}s",
            retry_after=self.retry_after_s,
        )

    def check(self, modality: str) -> None:
        """Raise ``Overloaded`` if a request of ``modality`` would be refused now, taking nothing: the
        admission middleware asks before it reads a body, so a refusal costs no body read."""
        limit = self.per_modality.get(modality)
        if limit is not None and self.inflight[modality] >= limit:
            raise self._refuse(modality, f"{limit} {modality} requests in flight")
        if sum(self.inflight.values()) >= self.total:
            raise self._refuse(modality, f"{self.total} requests in flight")

    def enter(self, modality: str) -> None:
        """Take a slot for one request of ``modality``, or raise ``Overloaded``."""
        self.check(modality)
        self.inflight[modality] += 1
        observe_inflight(modality, self.inflight[modality])

    def leave(self, modality: str) -> None:
        self.inflight[modality] -= 1
        observe_inflight(modality, self.inflight[modality])

    @contextmanager
    def slot(self, modality: str) -> Iterator[None]:
        self.enter(modality)
        try:
            yield
        finally:
            self.leave(modality)
