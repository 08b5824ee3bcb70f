"""The middleware Serve's HTTP proxy runs (deployments/gateway/proxy_errors.py), driven as plain ASGI."""

import asyncio
import json

import pytest
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import DeploymentUnavailableError

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


def _serve_answers(exc: BaseException):
    """An inner app that answers as Serve 2.60's proxy does when handling the request raised ``exc``
    (``proxy.py``: ``get_http_response_status`` then ``send_http_response_on_exception``)."""
    from ray.serve._private.http_util import get_http_response_status, send_http_response_on_exception

    async def proxy(scope, receive, send):
        status = get_http_response_status(exc, 30.0, "req-7")
        for message in send_http_response_on_exception(status, response_started=False):
            await send(message)

    return proxy


def _backpressure():
    from ray.serve.exceptions import BackPressureError

    return BackPressureError(num_queued_requests=9, max_queued_requests=8)


@pytest.mark.parametrize(
    ("exc", "status", "error_type"),
    [
        (TimeoutError(), 408, "timeout_error"),
        (_backpressure(), 503, "overloaded"),
        (DeploymentUnavailableError(DeploymentID(name="Gateway", app_name="mmserve")), 503, "overloaded"),
    ],
    ids=["request-timeout", "backpressure", "deployment-unavailable"],
)
def test_the_proxys_own_plain_text_answers_come_in_the_error_shape(exc, status, error_type):
    start, body = _run(_serve_answers(exc))
    headers = dict(start["headers"])
    assert start["status"] == status and headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"] == b"req-7"
    assert json.loads(body["body"])["error"]["type"] == error_type
    if status == 503:
        assert int(headers[b"retry-after"]) >= 1


def test_serves_probe_endpoints_keep_their_plain_text():
    scope = {"type": "http", "method": "GET", "path": "/-/healthz", "headers": []}
    start, body = _run(_serve_answers(_backpressure()), scope)
    assert start["status"] == 503 and b"text/plain" in dict(start["headers"])[b"content-type"]
