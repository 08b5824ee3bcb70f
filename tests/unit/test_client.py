"""Client retries and errors against a real (tiny, stdlib) HTTP server."""

import asyncio
import json
import time

import pytest

from clients.client import AsyncClient, Client, MMServeError, RetryPolicy
from tests.stub_http import StubHandler, serving

HEALTH = json.dumps({"status": "ready", "deployments": {}}).encode()


class _Flaky(StubHandler):
    """/readyz answers ``failures`` times with 429 + Retry-After, then 200; /v1/models always 422."""

    failures = 2
    seen: list[float] = []

    def do_GET(self):  # noqa: N802 (stdlib name)
        type(self).seen.append(time.monotonic())
        if self.path == "/v1/models":
            return self._json(
                422, {"error": {"type": "invalid_request_error", "message": "nope", "param": "x"}}
            )
        if len(type(self).seen) <= type(self).failures:
            return self._json(
                429,
                {"error": {"type": "rate_limited", "message": "slow down", "param": None}},
                {"Retry-After": "0.3"},
            )
        self._json(200, json.loads(HEALTH))

    def _json(self, status, body, headers=None):
        self._send(status, json.dumps(body).encode(), headers=headers)


@pytest.fixture
def server():
    _Flaky.seen = []
    with serving(_Flaky) as url:
        yield url


def test_sync_client_honours_retry_after(server):
    with Client(server, retry=RetryPolicy(attempts=3, base_delay_s=5)) as client:
        assert client.ready().status == "ready"
    gaps = [b - a for a, b in zip(_Flaky.seen, _Flaky.seen[1:])]
    assert len(_Flaky.seen) == 3 and all(0.25 < g < 2 for g in gaps), gaps


def test_async_client_retries_then_succeeds(server):
    async def go():
        async with AsyncClient(server, retry=RetryPolicy(attempts=3)) as client:
            return await client.ready()

    assert asyncio.run(go()).status == "ready"
    assert len(_Flaky.seen) == 3


def test_gives_up_after_attempts(server):
    _Flaky.failures = 10
    try:
        with Client(server, retry=RetryPolicy(attempts=1)) as client, pytest.raises(MMServeError) as err:
            client.ready()
    finally:
        _Flaky.failures = 2
    assert err.value.status == 429 and err.value.type == "rate_limited" and len(_Flaky.seen) == 2


def test_error_carries_server_error(server):
    with Client(server) as client, pytest.raises(MMServeError) as err:
        client.models()
    assert (err.value.status, err.value.type, err.value.message, err.value.param) == (
        422,
        "invalid_request_error",
        "nope",
        "x",
    )
