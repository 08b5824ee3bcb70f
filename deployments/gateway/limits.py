"""Limits enforced while a request is read, before any route runs: header size, a sane framing
(Content-Length), concurrent requests per client address, and a byte cap and a deadline on the body.

A slow or hostile client therefore holds a gateway slot for at most ``body_timeout_s``, can hold
at most ``max_requests_per_client`` of them, and can never make the gateway buffer more than
``max_body_bytes``. Probes (``/healthz``, ``/readyz``) are exempt from the per-address limit, so
they answer while an address is being refused.
"""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.gateway.errors import error_response
from models.errors import PayloadTooLarge, RequestTimeout

PROBES = ("/healthz", "/readyz")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    body_timeout_s: float
    max_header_bytes: int
    max_requests_per_client: int


class Refused(Exception):
    """A request refused before its route ran, with the response that says why."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message, self.headers = status, error_type, message, headers


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope["headers"] if k.lower() == name]


def check_framing(scope: Scope, limits: Limits) -> None:
    """Header size and Content-Length, from the headers alone."""
    size = sum(len(k) + len(v) for k, v in scope["headers"])
    if size > limits.max_header_bytes:
        raise Refused(431, "invalid_request_error",
                      f"the request headers are {size} bytes; the limit is {limits.max_header_bytes}")
    lengths, chunked = _header(scope, b"content-length"), _header(scope, b"transfer-encoding")
    if lengths and chunked:
        raise Refused(400, "invalid_request_error", "send either Content-Length or Transfer-Encoding, not both")
    if len(set(lengths)) > 1 or (lengths and not lengths[0].strip().isdigit()):
        raise Refused(400, "invalid_request_error", "Content-Length must be one non-negative integer")
    if lengths and int(lengths[0]) > limits.max_body_bytes:
        raise Refused(413, "payload_too_large",
                      f"the body is {int(lengths[0])} bytes; the limit is {limits.max_body_bytes}")


def limited_receive(receive: Receive, limits: Limits) -> Receive:
    """``receive`` that refuses a body over the byte cap, or one still arriving after the deadline."""
    deadline, received = time.monotonic() + limits.body_timeout_s, 0

    async def wrapped() -> Message:
        nonlocal received
        remaining = deadline - time.monotonic()
        try:
            message = await asyncio.wait_for(receive(), max(remaining, 0.001))
        except asyncio.TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within {limits.body_timeout_s:g}s") from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limits.max_body_bytes:
                raise PayloadTooLarge(f"the body is over the limit of {limits.max_body_bytes} bytes")
        return message

    return wrapped


class ClientSlots:
    """Concurrent requests per client address (one gateway replica's count)."""

    def __init__(self, per_client: int) -> None:
        self.per_client = per_client
        self.active: collections.Counter[str] = collections.Counter()

    def take(self, address: str) -> None:
        if self.active[address] >= self.per_client:
            raise Refused(429, "rate_limit_error",
                          f"too many concurrent requests from {address} (limit {self.per_client})",
                          headers={"Retry-After": "1"})
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        address = (scope.get("client") or ("unknown", 0))[0]
        probe = scope["path"].removeprefix(scope.get("root_path", "")) in PROBES
        try:
            check_framing(scope, self.limits)
            if not probe:
                self.slots.take(address)
        except Refused as refused:
            response = error_response(refused.status, refused.error_type, refused.message, headers=refused.headers)
            return await response(scope, receive, send)
        try:
            await self.app(scope, limited_receive(receive, self.limits), send)
        finally:
            if not probe:
                self.slots.give(address)
