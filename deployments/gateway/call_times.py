"""How long a compose node's model calls waited in Serve's queue and ran in replicas.

A composed request reports, per node, ``queue_ms`` (from the gateway's handle call until Serve's
router assigned it a replica) and ``replica_ms`` (from that assignment until the answer was back in
the gateway: the replica's batch wait, the model's forward and the transfer), each summed over the
node's model calls. ``planner.execute`` measures each node inside :func:`measured`; ``calls._once``
:func:`record`s every call it made. A node that made no model call (decoding runs in the gateway),
or whose calls' assignment time Serve did not expose, reports neither. Ray-free: the planner imports
it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class CallTimes:
    queue_s: float = 0.0
    replica_s: float = 0.0
    calls: int = 0

    def ms(self) -> tuple[float | None, float | None]:
        """(queue_ms, replica_ms), or (None, None) when no call was timed."""
        if not self.calls:
            return None, None
        return round(self.queue_s * 1000, 2), round(self.replica_s * 1000, 2)


_CURRENT: contextvars.ContextVar[CallTimes | None] = contextvars.ContextVar(
    "mmserve_call_times", default=None
)


@contextlib.contextmanager
def measured() -> Iterator[CallTimes]:
    """Collect the times of the calls made in this block, and in the tasks it starts."""
    times = CallTimes()
    token = _CURRENT.set(times)
    try:
        yield times
    finally:
        _CURRENT.reset(token)


def record(sent: float, assigned: float | None, answered: float) -> None:
    """One answered call (``time.perf_counter`` stamps); ignored outside :func:`measured`, or when
    the assignment was not seen."""
    times = _CURRENT.get()
    if times is None or assigned is None:
        return
    times.queue_s += max(0.0, assigned - sent)
    times.replica_s += max(0.0, answered - assigned)
    times.calls += 1
