"""uvicorn's answer to a request it cannot parse, in the error shape (proxy_errors), over a real
socket to a uvicorn server on loopback, for both of its HTTP protocols."""

import asyncio
import json
import socket

import pytest
import uvicorn

from deployments.gateway import proxy_errors

MALFORMED = [
    b"NOT A REQUEST LINE\r\n\r\n",
    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
]


async def _app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _answer(http: str, raw: bytes) -> bytes:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(_app, http=http, lifespan="off", log_level="critical")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection(*sock.getsockname())
    writer.write(raw)
    answer = await asyncio.wait_for(reader.read(), timeout=10)  # uvicorn closes after its 400
    writer.close()
    server.should_exit = True
    await serving
    return answer


@pytest.fixture(autouse=True)
def _shaped_400(monkeypatch):
    from uvicorn.protocols.http import h11_impl, httptools_impl

    for protocol in (h11_impl.H11Protocol, httptools_impl.HttpToolsProtocol):
        monkeypatch.setattr(protocol, "send_400_response", protocol.send_400_response)
    proxy_errors.middlewares()


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize("raw", MALFORMED, ids=["request-line", "negative-length", "header-without-colon"])
def test_unparseable_requests_get_400_in_the_error_shape(http, raw):
    answer = asyncio.run(_answer(http, raw))
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    assert lines[0] == b"HTTP/1.1 400 Bad Request"
    assert headers[b"content-type"] == b"application/json" and headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith("malformed HTTP request")
    assert error["request_id"] == headers[b"x-request-id"].decode()
