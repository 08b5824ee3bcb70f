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


def _not_found_answer(routes_known: bool) -> list[dict]:
    """What Serve 2.60's HTTP proxy answers for a path it has no route for, with the callback's patch
    in place, as the middleware then sends it."""
    from types import SimpleNamespace

    from ray.serve._private.proxy import HTTPProxy
    from ray.serve._private.proxy_router import ProxyRouter

    proxy_errors.answer_unrouted_requests_with_503_until_routes_arrive()
    router = ProxyRouter(get_handle=lambda *args: None)
    router._route_table_populated = routes_known  # what update_routes sets when the controller's routes come
    proxy = SimpleNamespace(proxy_router=router)

    async def app(scope, receive, send):
        async for message in HTTPProxy.not_found_response(proxy, SimpleNamespace(path=scope["path"])):
            if isinstance(message, dict):  # the ASGI messages; the last item is Serve's ResponseStatus
                await send(message)

    return _run(app)


def test_a_proxy_without_routes_yet_answers_503_not_404():
    """A proxy Serve just restarted listens before the controller sent it the routes: 'come back' (503,
    Retry-After, error shape), not a final 404; once it knows the routes, an unknown path is 404."""
    start, body = _not_found_answer(routes_known=False)
    headers = dict(start["headers"])
    assert start["status"] == 503 and int(headers[b"retry-after"]) >= 1
    assert json.loads(body["body"])["error"]["type"] == "overloaded"
    start, body = _not_found_answer(routes_known=True)
    assert start["status"] == 404 and b"not found" in body["body"]
