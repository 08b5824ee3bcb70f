"""Which deployments answered this gateway replica lately.

A deployment whose every replica slot is taken by real work queues a ``/readyz`` ping behind that
work, so under load a probe that only pings says "not ready" about a deployment that is serving
(issue 22: ``/readyz`` took up to 9.5 s and answered 503 for every model). A handle call that
returned is proof enough: ``/readyz`` counts a deployment that answered within ``RECENT_S`` as
ready and pings only the others. Per process: each gateway replica keeps its own."""

from __future__ import annotations

import time

RECENT_S = 2.0
_answered: dict[str, float] = {}


def answered(deployment: str) -> None:
    _answered[deployment] = time.monotonic()


def recently(deployment: str, within_s: float = RECENT_S) -> bool:
    return time.monotonic() - _answered.get(deployment, float("-inf")) < within_s
