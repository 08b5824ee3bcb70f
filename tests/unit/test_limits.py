"""The limits applied while a body is read (deployments/gateway/limits.py), with scripted ASGI
``receive`` callables: a minimum body rate after a grace period, the deadline, and the bytes all
bodies of one replica may buffer at once. No Ray, no sockets."""

from __future__ import annotations

import asyncio
import time

import pytest

from deployments.gateway.limits import BufferedBytes, Limits, RequestLimits, limited_receive
from models.errors import Overloaded, RequestTimeout

LIMITS = Limits(
    max_body_bytes=10_000,
    body_timeout_s=5.0,
    max_header_bytes=4096,
    max_requests_per_client=4,
    min_body_rate=1000,
    body_grace_s=0.2,
    max_buffered_bytes=20_000,
)


def trickle(parts: list[bytes], every_s: float):
    """A client that sends ``parts`` one every ``every_s`` seconds, the last one closing the body."""
    queue = list(parts)

    async def receive():
        if not queue:
            await asyncio.sleep(3600)  # a finished client waits for the response
        await asyncio.sleep(every_s)
        part = queue.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(queue)}

    return receive


async def read_all(receive) -> int:
    total = 0
    while True:
        message = await receive()
        total += len(message.get("body", b""))
        if not message.get("more_body"):
            return total


async def test_a_body_at_a_fair_rate_is_read_whole():
    # 10 parts of 500 bytes every 0.1 s: 5000 bytes/s, above the 1000 bytes/s minimum
    assert await read_all(limited_receive(trickle([b"x" * 500] * 10, 0.1), LIMITS)) == 5000


async def test_a_body_slower_than_the_minimum_rate_is_cut_soon_after_the_grace():
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match="slower than 1000 bytes/s"):
        await read_all(limited_receive(trickle([b"x"] * 50, 0.1), LIMITS))  # 10 bytes/s
    # cut once the grace (0.2 s) and what its few bytes buy (ms) are spent: long before the 5 s deadline
    assert time.monotonic() - started < 1.0


async def test_the_deadline_still_bounds_a_body_that_keeps_the_rate():
    limits = Limits(**{**LIMITS.__dict__, "body_timeout_s": 0.5, "max_body_bytes": 10**9, "min_body_rate": 1})
    with pytest.raises(RequestTimeout, match="did not arrive within 0.5s"):
        await read_all(limited_receive(trickle([b"x" * 100] * 100, 0.1), limits))


async def test_once_the_body_is_in_receive_waits_for_the_client_without_a_deadline():
    """After the last part, the app's receive() waits for a disconnect: no rate or deadline applies."""
    limits = Limits(**{**LIMITS.__dict__, "body_timeout_s": 0.3})
    receive = limited_receive(trickle([b"{}"], 0.0), limits)
    await read_all(receive)
    with pytest.raises(asyncio.TimeoutError):  # still waiting (the client's), not a RequestTimeout
        await asyncio.wait_for(receive(), 0.6)


def test_buffered_bytes_reserve_the_declared_length_and_give_it_back():
    pool = BufferedBytes(1000)
    first = pool.reserve(600)
    with pytest.raises(Overloaded, match="buffering 600 bytes"):
        pool.reserve(600)
    first.release()
    assert pool.held == 0
    pool.reserve(600).release()


async def test_a_chunked_body_counts_as_it_arrives():
    pool = BufferedBytes(1500)
    held = pool.reserve(0)
    receive = limited_receive(trickle([b"x" * 1000, b"x" * 1000], 0.0), LIMITS, held)
    await receive()
    assert pool.held == 1000
    with pytest.raises(Overloaded):
        await receive()


async def test_the_middleware_refuses_a_body_the_buffer_cannot_take_before_reading_it():
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        raise AssertionError("the body must not be read")

    middleware = RequestLimits(app, limits=LIMITS)
    held = middleware.buffered.reserve(15_000)
    scope = {
        "type": "http",
        "path": "/v1/classify",
        "client": ("127.0.0.1", 1),
        "headers": [(b"content-length", b"8000")],
    }
    await middleware(scope, receive, send)
    assert reached == [] and sent[0]["status"] == 503
    assert (b"retry-after", b"1") in sent[0]["headers"]
    held.release()
    await middleware(scope, receive, send)
    assert reached == ["/v1/classify"] and middleware.buffered.held == 0
