"""Every handle call a request makes goes through ``call``: ``await call(handle.method, *args)``.

Deadline. The admission middleware gives each request one deadline (``start_deadline``: the
server's ``request_timeout_s``, or a shorter ``X-Request-Timeout`` from the caller); it lives in a
context variable, so every node of a composed request's DAG sees it. ``call`` waits for a
DeploymentResponse only for the time left, then cancels it (``response.cancel()``: the replica
stops the work, and a request still queued for a batch never reaches the model) and raises
``DeadlineExceeded`` (504). A request whose client went away is cancelled by Serve; the
``CancelledError`` cancels the handle call the same way and is re-raised, never swallowed.

Retries. Serve retries a call only while placing it; once a replica accepted it, the replica's
death reaches the caller. ``call`` retries such a call once, within the deadline (Serve's router
has by then taken the dead replica out of rotation, so the retry goes to another one, or waits for
its replacement), when it is safe to run it twice:

- model calls (VisionEncoder, TextEncoder, AudioModel, FusionHead: ``embed``, ``classify``,
  ``transcribe``, ``features``, ``fusion_features``, ``predict``, ``info``, ``describe``...) are
  pure functions of their inputs: a second run gives the same answer and changes nothing;
- SearchIndex reads (``search``, ``has``, ``list``, ``describe``) change nothing, and its writes
  ``add``, ``delete`` and ``create`` are idempotent: item ids are content hashes (re-adding is a
  no-op; a retried ``add`` may report as already present what the lost attempt added), deleting
  what is gone deletes nothing, and creating an index that exists with the same encoder succeeds;
- NOT retried (``retry=False``): ``SearchIndex.drop``, whose second run answers 404 for a drop that
  did happen, and QuotaKeeper's ``acquire`` (not called through here), which would take a second
  lease. Their callers get 503 with Retry-After and decide.

Errors Serve raises before any replica ran the call (``BackPressureError``: a full queue;
``DeploymentUnavailableError``) are not retried here: the caller is told to come back (503).
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import RayServeException

from deployments.gateway import liveness
from models.errors import DeadlineExceeded, InvalidInput

log = logging.getLogger("ray.serve")

TIMEOUT_HEADER = "x-request-timeout"
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("mmserve_deadline", default=None)


DEADLINE_SLACK_S = 0.05


def request_timeout(header: str | None, server_s: float) -> float:
    """Seconds this request may take: the server's limit, or the caller's header when shorter."""
    if header is None:
        return server_s
    try:
        wanted = float(header)
    except ValueError:
        wanted = math.nan
    if not math.isfinite(wanted) or wanted <= 0:
        raise InvalidInput(f"X-Request-Timeout must be a positive number of seconds, not '{header[:32]}'",
                           param=TIMEOUT_HEADER)
    return min(wanted, server_s)


def start_deadline(seconds: float) -> contextvars.Token:
    return _DEADLINE.set(time.monotonic() + seconds)


def remaining() -> float | None:
    """Seconds left before this request's deadline (None outside a request)."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def check_deadline() -> None:
    left = remaining()
    if left is not None and left <= 0:
        raise DeadlineExceeded("the request's deadline passed before its work finished")


def replica_lost(exc: BaseException) -> bool:
    """The replica serving the call died or became unreachable (also as an 'upstream actor died')."""
    if isinstance(exc, (ActorDiedError, ActorUnavailableError, RayActorError)):
        return True
    cause = getattr(exc, "cause", None) or exc.__cause__
    return isinstance(exc, RayServeException) and isinstance(cause, (ActorDiedError, RayActorError))


async def _await(response) -> Any:
    return await response


async def _once(method, args: tuple, kwargs: dict) -> Any:
    check_deadline()
    response = method.remote(*args, **kwargs)
    try:
        result = await asyncio.wait_for(_await(response), remaining())
        liveness.answered(getattr(method, "deployment_name", "?"))
        return result
    except TimeoutError:
        # Ours when the deadline is (all but) reached: the loop's timer may fire a hair early.
        if (remaining() or 0.0) > DEADLINE_SLACK_S:  # a TimeoutError of the call itself
            raise
        response.cancel()
        raise DeadlineExceeded("the request's deadline passed before its work finished") from None
    except asyncio.CancelledError:  # the client went away, or a sibling node failed: stop the work
        response.cancel()
        raise


async def call(method, *args, retry: bool = True, **kwargs) -> Any:
    """``method.remote(*args, **kwargs)`` awaited within the request's deadline; retried once when
    its replica died under it and ``retry`` (see the module docstring for which calls may)."""
    try:
        return await _once(method, args, kwargs)
    except Exception as exc:
        if not (retry and replica_lost(exc)):
            raise
        log.warning("replica lost under %s (%s); retrying once", _name(method), type(exc).__name__)
    return await _once(method, args, kwargs)


def _name(method) -> str:
    return f"{getattr(method, 'deployment_name', '?')}.{getattr(method, 'method_name', '?')}"
