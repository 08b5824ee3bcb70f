"""The middleware Serve's HTTP proxy runs (deployments/gateway/proxy_errors.py), driven as plain ASGI."""

import asyncio
import json

from deployments.gateway import proxy_errors


def _run(inner, scope=None) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = scope or {
        "type": "http",
        "method": "GET",
        "path": "/v1/models",
        "headers": [(b"x-request-id", b"req-7")],
    }
    asyncio.run(proxy_errors.AnswerLostRequests(inner)(scope, receive, send))
    return sent


async def _lost(scope, receive, send):
    """What Serve's proxy does when the ingress replica died under the request: nothing."""


def test_a_request_the_proxy_left_unanswered_gets_503_in_the_error_shape():
    start, body = _run(_lost)
    headers = dict(start["headers"])
    assert start["status"] == 503 and headers[b"retry-after"] == b"1" and headers[b"x-request-id"] == b"req-7"
    error = json.loads(body["body"])["error"]
    assert error["type"] == "overloaded" and "retry" in error["message"] and error["param"] is None


def test_answered_requests_and_websockets_pass_untouched():
    async def answered(scope, receive, send):
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"the gateway's own answer"})

    assert [m.get("status") for m in _run(answered)] == [500, None]
    assert _run(_lost, {"type": "websocket", "path": "/ws", "headers": []}) == []


def test_it_is_what_serves_proxy_callback_returns():
    from ray.serve._private.http_util import validate_http_proxy_callback_return
    from ray.serve._private.utils import call_function_from_import_path

    (middleware,) = validate_http_proxy_callback_return(call_function_from_import_path(proxy_errors.CALLBACK))
    assert middleware.cls is proxy_errors.AnswerLostRequests
