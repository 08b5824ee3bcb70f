"""Every handle call a request makes goes through ``call``: ``await call(handle.method, *args)``.

Deadline. The admission middleware gives each request one deadline (``start_deadline``: the
server's ``request_timeout_s``, or a shorter ``X-Request-Timeout`` from the caller); it lives in a
context variable, so every node of a composed request's DAG sees it. ``call`` waits for a
DeploymentResponse only for the time left, then cancels it (``response.cancel()``: the replica
stops the work, and a request still queued for a batch never reaches the model) and raises
``DeadlineExceeded`` (504). ``stream`` does the same for a streamed call (a deployment generator
method): each item is awaited within the deadline, and leaving the iteration cancels it. A request
whose client went away is cancelled by Serve; the ``CancelledError`` cancels the handle call the
same way and is re-raised, never swallowed.

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

Poison requests. A model call is retried because its replica's death is assumed to be bad luck (a
node lost, a replica killed). An input that itself kills the replica (issue 22: a lone surrogate
in ``language`` made Ray's worker die while encoding the error that quoted it) would be spread by
that retry, and by every repeat of the request, to every replica. So each gateway replica keeps a
quarantine (``quarantine.py``; TTL ``gateway.settings.poison_quarantine_s``, bounded size):

- a call whose replica died marks its input (a content hash of the method and its arguments,
  computed only then: the normal path hashes nothing) *suspect*, and is retried once;
- retries after a death go one at a time per method, so a poison's retry dies alone;
- a retry that succeeds clears the suspicion; a replica death under a call of a suspect input sent
  after it became suspect (its retry, or a later request), on another replica, *holds* it: the
  caller gets 422 ``poison_request`` (a copy that was already in flight is not held for dying: it
  may be an innocent bystander on the replica a poison's retry killed);
- while any input of a method is held, that method's calls are hashed before they are sent, and a
  held input is refused at once with 422, never sent.

So one crashing input costs at most two replica deaths per gateway replica per TTL, however often
it is sent; an innocent input caught in a random replica death is retried as before. Deaths are
counted per distinct replica (two copies of one input on the replica that died are one death), and
logged and counted (``mmserve_poison_total``, by method and outcome: suspect, held, refused).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import RayServeException

from deployments import tracing
from deployments.gateway import call_times, liveness
from deployments.gateway.parsing import off_loop
from deployments.gateway.quarantine import Quarantine, fingerprint
from deployments.metrics import handle_names, observe_poison, watch_queue_wait
from models.errors import DeadlineExceeded, InvalidInput, PoisonRequest

log = logging.getLogger("ray.serve")

TIMEOUT_HEADER = "x-request-timeout"
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("mmserve_deadline", default=None)


DEADLINE_SLACK_S = 0.05
_UNNAMED = itertools.count()
QUARANTINE = Quarantine()  # this gateway replica's (``configure_quarantine`` applies the settings)


def configure_quarantine(*, ttl_s: float, capacity: int) -> None:
    QUARANTINE.configure(ttl_s=ttl_s, capacity=capacity)


def request_timeout(header: str | None, server_s: float) -> float:
    """Seconds this request may take: the server's limit, or the caller's header when shorter."""
    if header is None:
        return server_s
    try:
        wanted = float(header)
    except ValueError:
        wanted = math.nan
    if not math.isfinite(wanted) or wanted <= 0:
        raise InvalidInput(
            f"X-Request-Timeout must be a positive number of seconds, not '{header[:32]}'",
            param=TIMEOUT_HEADER,
        )
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


def _deadline_reached() -> bool:
    """Whether a TimeoutError from waiting within ``remaining()`` is the deadline's: it is when the
    deadline is (all but) reached, as the loop's timer may fire a hair early."""
    return (remaining() or 0.0) <= DEADLINE_SLACK_S


def _past_deadline() -> DeadlineExceeded:
    return DeadlineExceeded("the request's deadline passed before its work finished")


async def _await(response) -> Any:
    return await response


async def _once(method, args: tuple, kwargs: dict) -> Any:
    check_deadline()
    with tracing.span(f"call {_name(method)}"):
        sent = time.perf_counter()
        response = method.remote(*args, **kwargs)
        assignment = watch_queue_wait(method, response, sent)
        result = await _sent(method, response)
        call_times.record(sent, assignment.at, time.perf_counter())
        return result


async def _sent(method, response) -> Any:
    try:
        result = await asyncio.wait_for(_await(response), remaining())
        liveness.answered(getattr(method, "deployment_name", "?"))
        return result
    except TimeoutError:
        if not _deadline_reached():  # a TimeoutError of the call itself
            raise
        response.cancel()
        raise _past_deadline() from None
    except asyncio.CancelledError:  # the client went away, or a sibling node failed: stop the work
        response.cancel()
        raise


def dead_replica(exc: BaseException) -> str:
    """The id of the replica (actor) whose death ``exc`` reports; a unique stand-in when Ray gave none."""
    for candidate in (exc, getattr(exc, "cause", None), exc.__cause__):
        actor = getattr(candidate, "actor_id", None)
        if actor:
            return str(actor)
    return f"unknown-{next(_UNNAMED)}"  # never id(exc): a collected exception's id comes back


class _Call:
    """One handle call and, once needed, its input's fingerprint: from the content hash the caller
    already has (``content``: an image's sha256, not read again), else hashed off the event loop."""

    def __init__(self, method, args: tuple, kwargs: dict, content: str | None = None) -> None:
        self.method, self.args, self.kwargs = method, args, kwargs
        self.name = _name(method)
        self._fingerprint = None if content is None else fingerprint(self.name, (f"content:{content}",), {})
        self.sent_at = 0.0  # when the attempt now running was sent (the quarantine's clock)

    async def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = await off_loop(fingerprint, self.name, self.args, self.kwargs)
        return self._fingerprint

    async def refuse_if_held(self) -> None:
        if QUARANTINE.held(self.name, await self.fingerprint()):
            observe_poison(self.name, "refused")
            log.warning(
                "refused a held input of %s without sending it (fingerprint %s)", self.name, self._fingerprint
            )
            raise self.poison()

    async def lost(self, exc: BaseException) -> None:
        """Record the replica death under this call; raises PoisonRequest when that holds its input."""
        replica = dead_replica(exc)
        held = QUARANTINE.died(self.name, await self.fingerprint(), replica, sent_at=self.sent_at)
        observe_poison(self.name, "held" if held else "suspect")
        log.warning(
            "replica %s lost under %s (%s); its input %s is %s",
            replica,
            self.name,
            type(exc).__name__,
            self._fingerprint,
            "held: 422 until it expires" if held else "suspect",
        )
        if held:
            raise self.poison() from exc

    async def attempt(self) -> Any:
        self.sent_at = QUARANTINE.clock()
        return await _once(self.method, self.args, self.kwargs)

    def poison(self) -> PoisonRequest:
        return PoisonRequest(
            f"model replicas died twice with this input in flight ({self.name}); it is refused "
            f"for {QUARANTINE.ttl_s:g} s, not sent again"
        )


async def call(method, *args, retry: bool = True, content: str | None = None, **kwargs) -> Any:
    """``method.remote(*args, **kwargs)`` awaited within the request's deadline; retried once when
    its replica died under it and ``retry`` (see the module docstring for which calls may), unless
    its input is held as a poison request (422). ``content``: a hash that already names the input
    (the quarantine then fingerprints it without reading the arguments again)."""
    this = _Call(method, args, kwargs, content)
    if QUARANTINE.watching(this.name):
        await this.refuse_if_held()
    try:
        return await this.attempt()
    except Exception as exc:
        if not replica_lost(exc):
            raise
        await this.lost(exc)
        if not retry:
            raise
    return await _retry(this)


async def _retry(this: _Call) -> Any:
    """The one retry after a replica death: alone among its method's retries, and not when the input
    was held meanwhile (a copy of it in another request died again)."""
    slot = QUARANTINE.retry_slot(this.name)
    try:
        await asyncio.wait_for(slot.acquire(), remaining())
    except TimeoutError:
        raise DeadlineExceeded("the request's deadline passed while its retry waited its turn") from None
    try:
        await this.refuse_if_held()
        result = await this.attempt()
    except Exception as exc:
        if replica_lost(exc):
            await this.lost(exc)
        raise
    finally:
        slot.release()
    QUARANTINE.cleared(this.name, await this.fingerprint())
    return result


async def stream(method, *args, **kwargs) -> AsyncIterator[Any]:
    """The items of ``method.options(stream=True).remote(*args, **kwargs)``, each awaited within the
    request's deadline. Leaving the iteration early (the client went away, the deadline passed, the
    caller failed) cancels the call on the replica. A held input is refused as ``call`` refuses it; a
    replica death under the stream is recorded in the quarantine the same way (its second death holds
    the input: 422), but the stream is not retried, since part of the answer may already be out."""
    this = _Call(method, args, kwargs)
    if QUARANTINE.watching(this.name):
        await this.refuse_if_held()
    check_deadline()
    this.sent_at = QUARANTINE.clock()
    items = method.options(stream=True).remote(*args, **kwargs)
    done = False
    try:
        while (item := await _next_item(items)) is not _END:
            yield item
        done = True
    except Exception as exc:
        if replica_lost(exc):
            await this.lost(exc)
        raise
    finally:
        if not done:
            items.cancel()


_END = object()


async def _next_item(items) -> Any:
    """The stream's next item within the deadline (``_END`` when it ended)."""
    try:
        return await asyncio.wait_for(anext(items), remaining())
    except StopAsyncIteration:
        return _END
    except TimeoutError:
        if not _deadline_reached():
            raise
        raise _past_deadline() from None


def _name(method) -> str:
    """``Deployment.method`` of a handle method."""
    return ".".join(handle_names(method))
