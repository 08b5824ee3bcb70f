"""Limits enforced while a request is read, before any route runs: header size, a sane framing
(Content-Length), concurrent requests per client address, the bytes all bodies being read may
buffer at once, and per body a byte cap, a minimum rate and a deadline.

A slow or hostile client therefore holds a gateway connection for at most ``body_grace_s`` plus
what its bytes buy at ``min_body_rate`` (and never past ``body_timeout_s``), can hold at most
``max_requests_per_client`` of them, and can never make the gateway buffer more than
``max_body_bytes``; all bodies together stay under ``max_buffered_bytes`` (503 beyond it). A body
being read takes none of the in-flight budgets that guard the models (``admission.py`` takes them
once the body is in). Probes (``/healthz``, ``/readyz``) are exempt from the per-address limit, so
they answer while an address is being refused.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.gateway.errors import domain_response, error_response
from models.errors import Overloaded, PayloadTooLarge, RequestTimeout

PROBES = ("/healthz", "/readyz")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    body_timeout_s: float
    max_header_bytes: int
    max_requests_per_client: int
    min_body_rate: int  # bytes/s a body must keep up, counted from the end of the grace
    body_grace_s: float
    max_buffered_bytes: int


class Refused(Exception):
    """A request refused before its route ran, with the response that says why."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message, self.headers = status, error_type, message, headers

    def response(self):
        return error_response(self.status, self.error_type, self.message, headers=self.headers)


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope["headers"] if k.lower() == name]


def check_framing(scope: Scope, limits: Limits) -> int:
    """Header size and Content-Length, from the headers alone; the declared length (0 without one)."""
    size = sum(len(k) + len(v) for k, v in scope["headers"])
    if size > limits.max_header_bytes:
        raise Refused(
            431,
            "invalid_request_error",
            f"the request headers are {size} bytes; the limit is {limits.max_header_bytes}",
        )
    lengths, chunked = _header(scope, b"content-length"), _header(scope, b"transfer-encoding")
    if lengths and chunked:
        raise Refused(
            400, "invalid_request_error", "send either Content-Length or Transfer-Encoding, not both"
        )
    if len(set(lengths)) > 1 or (lengths and not lengths[0].strip().isdigit()):
        raise Refused(400, "invalid_request_error", "Content-Length must be one non-negative integer")
    declared = int(lengths[0]) if lengths else 0
    if declared > limits.max_body_bytes:
        raise Refused(
            413, "payload_too_large", f"the body is {declared} bytes; the limit is {limits.max_body_bytes}"
        )
    return declared


class BufferedBytes:
    """Bytes of request bodies one gateway replica holds at once: each request reserves what its
    Content-Length declares before the body is read (a chunked body, as it arrives) and gives it
    back when it ends. Beyond ``limit`` a request is refused at once: 503 with Retry-After."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def reserve(self, declared: int) -> Reservation:
        return Reservation(self, declared)


class Reservation:
    """One request's share of ``BufferedBytes``: its declared length, grown by what arrives past it."""

    def __init__(self, pool: BufferedBytes, declared: int) -> None:
        self.pool, self.size, self.seen = pool, 0, 0
        self._take(declared)

    def _take(self, n: int) -> None:
        if n <= 0:
            return
        if self.pool.held + n > self.pool.limit:
            raise Overloaded(
                f"the gateway is buffering {self.pool.held} bytes of request bodies (limit "
                f"{self.pool.limit}); retry shortly",
                retry_after=1.0,
            )
        self.pool.held += n
        self.size += n

    def grow(self, part: int) -> None:
        self.seen += part
        self._take(self.seen - self.size)

    def release(self) -> None:
        self.pool.held -= self.size
        self.size = 0


class BodyClock:
    """When the next part of a body must have arrived: the body's deadline, or sooner when the bytes
    so far are behind ``min_body_rate`` (after a grace period for the first bytes)."""

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits, self.started = limits, now
        self.deadline = now + limits.body_timeout_s

    def due(self, received: int) -> float:
        return min(
            self.deadline, self.started + self.limits.body_grace_s + received / self.limits.min_body_rate
        )

    def late(self, received: int) -> RequestTimeout:
        if self.due(received) < self.deadline:
            return RequestTimeout(f"the request body arrived slower than {self.limits.min_body_rate} bytes/s")
        return RequestTimeout(f"the request body did not arrive within {self.limits.body_timeout_s:g}s")


def limited_receive(receive: Receive, limits: Limits, buffered: Reservation | None = None) -> Receive:
    """``receive`` that refuses a body over the byte cap, one arriving slower than the minimum rate,
    or one still arriving after the deadline; each part is counted in ``buffered`` as it arrives.
    Once the body is complete, ``receive`` is the server's own (it waits for a disconnect)."""
    clock, received, complete = BodyClock(limits, time.monotonic()), 0, False

    async def wrapped() -> Message:
        nonlocal received, complete
        if complete:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), max(clock.due(received) - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            raise clock.late(received) from None
        if message["type"] == "http.request":
            part = len(message.get("body", b""))
            received += part
            if received > limits.max_body_bytes:
                raise PayloadTooLarge(f"the body is over the limit of {limits.max_body_bytes} bytes")
            if buffered is not None:
                buffered.grow(part)
            complete = not message.get("more_body", False)
        return message

    return wrapped


class ClientSlots:
    """Concurrent requests per client address (one gateway replica's count)."""

    def __init__(self, per_client: int) -> None:
        self.per_client = per_client
        self.active: collections.Counter[str] = collections.Counter()

    def take(self, address: str) -> None:
        if self.active[address] >= self.per_client:
            raise Refused(
                429,
                "rate_limit_error",
                f"too many concurrent requests from {address} (limit {self.per_client})",
                headers={"Retry-After": "1"},
            )
        self.active[address] += 1

    def give(self, address: str) -> None:
        self.active[address] -= 1
        if self.active[address] <= 0:
            del self.active[address]


class RequestLimits:
    """Pure ASGI middleware (outermost): what it refuses never reaches admission or a route."""

    def __init__(self, app: ASGIApp, *, limits: Limits) -> None:
        self.app, self.limits = app, limits
        self.slots = ClientSlots(limits.max_requests_per_client)
        self.buffered = BufferedBytes(limits.max_buffered_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        address = (scope.get("client") or ("unknown", 0))[0]
        probe = scope["path"].removeprefix(scope.get("root_path", "")) in PROBES
        try:
            reservation = self.buffered.reserve(check_framing(scope, self.limits))
        except Refused as refused:
            return await refused.response()(scope, receive, send)
        except Overloaded as overloaded:
            return await domain_response(overloaded)(scope, receive, send)
        try:
            await self._with_slot(
                scope, limited_receive(receive, self.limits, reservation), send, address, probe
            )
        finally:
            reservation.release()

    async def _with_slot(self, scope: Scope, receive: Receive, send: Send, address: str, probe: bool) -> None:
        if not probe:
            try:
                self.slots.take(address)
            except Refused as refused:
                return await refused.response()(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            if not probe:
                self.slots.give(address)
