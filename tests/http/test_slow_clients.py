"""Slow and hostile clients are contained: connections that send headers and part of a body, a
Content-Length the body never reaches, and oversized bodies cannot stop the API for anyone else.

The attackers connect from 127.0.0.1; the well-behaved client from 127.0.0.3, another loopback
address (the per-address limit would otherwise refuse it along with the attacker)."""
from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.conftest import TEST_ARGS

SETTINGS = TEST_ARGS["gateway"]["settings"]
ATTACKERS = 140


def _half_sent(port: int, path: str = "/v1/embeddings/text") -> socket.socket:
    """Headers and part of a body that says it is 1000 bytes long; the rest never comes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: 1000\r\n\r\n{{\"texts\": [\"".encode())
    return sock


def _status_line(sock: socket.socket) -> bytes:
    try:
        return sock.recv(64).split(b"\r\n", 1)[0]
    except OSError:
        return b""


@pytest.fixture()
def port(served, base_url) -> int:
    return int(base_url.rsplit(":", 1)[1])


def test_half_sent_bodies_do_not_stop_the_api(base_url, port):
    attackers = [_half_sent(port) for _ in range(ATTACKERS)]
    try:
        time.sleep(1.0)  # they are all holding their connections now
        started = time.perf_counter()
        assert httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200
        health_s = time.perf_counter() - started
        transport = httpx.HTTPTransport(local_address="127.0.0.3")
        with httpx.Client(transport=transport, timeout=5) as honest:
            started = time.perf_counter()
            r = honest.post(f"{base_url}/v1/embeddings/text", json={"texts": ["a normal request"]})
            normal_s = time.perf_counter() - started
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384
        assert health_s < 1.0 and normal_s < 1.0, (health_s, normal_s)
        # Every attacker is answered: 429 beyond the per-address limit at once, 408 once the body
        # deadline passes for the others; none is left hanging.
        deadline = SETTINGS["body_timeout_s"] + 10
        for sock in attackers:
            sock.settimeout(deadline)
        answers = [_status_line(sock) for sock in attackers]
        assert all(a.split(b" ")[1:2] in ([b"408"], [b"429"]) for a in answers), set(answers)
        assert answers.count(b"HTTP/1.1 429 Too Many Requests") >= ATTACKERS - SETTINGS["max_requests_per_client"]
    finally:
        for sock in attackers:
            sock.close()


def test_a_body_over_the_cap_is_refused_while_it_is_read(port):
    """No Content-Length (chunked): the cap is counted as the chunks arrive, and the refusal
    comes long before the 200 MB the client claims to be sending."""
    cap = SETTINGS["max_body_bytes"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/embeddings/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 65536
        sent, answer = 0, b""
        sock.settimeout(0.001)
        while sent < 200 * 1024 * 1024 and not answer:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            except OSError:
                break
            try:
                answer = sock.recv(64)
            except (TimeoutError, BlockingIOError, socket.timeout):
                pass
        sock.settimeout(10)
        answer = answer or sock.recv(64)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert sent < 4 * cap, sent


def test_a_declared_length_over_the_cap_is_refused_before_reading(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/embeddings/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 209715200\r\n\r\n{")
        assert sock.recv(64).startswith(b"HTTP/1.1 413")
