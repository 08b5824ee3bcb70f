"""Which answers the client retries: 502/503/504, broken connections and the proxy's own plain 500
on idempotent routes; never a non-idempotent call (``drop_index``) after the server may have run it."""

import json
import socket

import httpx
import pytest

from clients.client import Client, MMServeError, RetryPolicy
from tests.stub_http import StubHandler, serving

FAST = RetryPolicy(attempts=3, base_delay_s=0.01)


class _Faulty(StubHandler):
    """Each path answers its scripted faults in order, then succeeds."""

    script: dict[str, list] = {}
    seen: list[tuple[str, str, str | None]] = []

    def _answer(self):
        type(self).seen.append((self.command, self.path, self.headers.get("X-Request-Timeout")))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        faults = type(self).script.get(self.path, [])
        fault = faults.pop(0) if faults else None
        if fault == "drop":  # close the connection without an answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "plain500":
            return self._send(500, b"Internal Server Error", "text/plain")
        if isinstance(fault, int):
            body = {"error": {"type": "overloaded", "message": "busy", "param": None}}
            return self._send(fault, json.dumps(body).encode(), "application/json", {"Retry-After": "0"})
        self._send(200, json.dumps({"status": "ok"}).encode(), "application/json")

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def server():
    _Faulty.seen, _Faulty.script = [], {}
    with serving(_Faulty) as url:
        yield url


def test_idempotent_routes_ride_out_overload_lost_replicas_and_dropped_connections(server):
    _Faulty.script = {"/v1/audio/features": [503, "plain500", "drop"]}
    with Client(server, retry=FAST, timeout=10) as client:
        assert client._call(_features_call()) == json.dumps({"status": "ok"})
    assert len(_Faulty.seen) == 4


def _features_call():
    from clients.client import _Call

    return _Call("POST", "/v1/audio/features", None, {"json": {"audio": "x"}})


def test_a_non_idempotent_call_is_not_retried_after_the_server_may_have_run_it(server):
    _Faulty.script = {"/v1/indexes/photos": [503]}
    with Client(server, retry=FAST) as client, pytest.raises(MMServeError) as err:
        client.drop_index("photos")
    assert err.value.status == 503 and len(_Faulty.seen) == 1
    _Faulty.script = {"/v1/indexes/photos": ["drop"]}
    with Client(server, retry=FAST) as client, pytest.raises(httpx.TransportError):
        client.drop_index("photos")
    assert len(_Faulty.seen) == 2


def test_a_refusal_before_any_work_is_retried_on_every_route(server):
    _Faulty.script = {"/v1/indexes/photos": [429]}
    with Client(server, retry=FAST) as client:
        client.drop_index("photos")
    assert len(_Faulty.seen) == 2


def test_the_client_gives_the_server_its_timeout_as_the_deadline(server):
    with Client(server, timeout=20) as client:
        client.stats()
    assert float(_Faulty.seen[0][2]) == pytest.approx(19.0)
