"""Serve's HTTP proxy, answering in the one error shape when the gateway replica under a request dies.

Ray Serve 2.60's proxy (``serve/_private/proxy.py``, ``send_request_to_replica``) turns the
``RayActorError`` of an ingress replica that died mid-request into status 500 and sends nothing
(``http_util.send_http_response_on_exception`` answers only 408, 429 and 503); uvicorn then finds
the proxy's ASGI app returned without a response and writes its own plain-text
``500 Internal Server Error`` with ``Connection: close``. A client without retries sees that.

Serve runs the Starlette middlewares that the callable named by
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` returns around the proxy's app (``http_util.
configure_http_middlewares``), in the proxy's own process. :func:`middlewares` is that callable
for the embedded Ray (``graphs/local_ray.py`` sets the variable); on a cluster, set it on every
node. It must stay importable in the proxy: a callback that fails to import keeps the proxy from
starting.

A client's ``X-Request-ID`` is bounded here (``request_ids``) before Serve's own middleware keeps
it as the request's id; a malformed one is dropped, so Serve assigns a new one.

The proxy also answers some requests itself, in plain text, before or instead of the gateway:
408 when ``request_timeout_s`` runs out, 429/503 when the gateway's queue is full (backpressure).
Those answers pass through this middleware as well, and it gives them the one error shape (the
gateway answers JSON, so a ``text/plain`` answer with one of these statuses is the proxy's own).

A request whose framing uvicorn cannot parse (a bare LF, Content-Length beside chunked, a negative
length) never becomes an ASGI request: uvicorn writes its own plain-text 400 and closes. The
callback gives that answer the error shape too, with a new request id, by replacing the one method
of uvicorn's two HTTP protocols that writes it (:func:`answer_malformed_requests_in_error_shape`).

A proxy that Serve just started (after the last one died) listens before it has learned the
application routes from the controller; until then it answered every request 404 "Path not found",
which a client treats as final (issue 22 #7: three 404s in the proxy-kill chaos test once the proxy
came back within 4 s). While its route table is empty, its not-found answer is 503 with Retry-After
instead (:func:`answer_unrouted_requests_with_503_until_routes_arrive`), in the error shape above.
"""

from __future__ import annotations

import uuid

from starlette.middleware import Middleware

from deployments.request_ids import keep_well_formed

CALLBACK = "deployments.gateway.proxy_errors:middlewares"
REQUEST_ID = "x-request-id"


def _request_id(scope) -> str | None:
    """Serve's own middleware (inside this one) put the request's id into the scope's headers."""
    return next(
        (v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == REQUEST_ID.encode()), None
    )


class AnswerLostRequests:
    """Pure ASGI middleware around Serve's proxy: an HTTP request the proxy let go unanswered (its
    ingress replica died under it, or the request failed inside Ray before a response began) gets
    503 ``overloaded`` with Retry-After in the error shape instead of uvicorn's plain-text 500, so a
    client knows it may come back; the X-Request-ID Serve gave it is kept. The proxy's own
    plain-text 408/429/503 answers are sent in the error shape too (:func:`_proxy_error`)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Serve's RequestIdMiddleware (inside this one) keeps a client's X-Request-ID as sent:
        # only a well-formed one reaches it, any other is dropped and Serve assigns a new id.
        scope["headers"] = keep_well_formed(scope.get("headers", []))
        started = False
        replaced = False  # the proxy's own plain-text answer, sent in the error shape instead

        async def watching(message) -> None:
            nonlocal started, replaced
            if message["type"] == "http.response.start":
                started = True
                error = None if scope["path"].startswith("/-/") else _proxy_error(message)
                if error is not None:
                    replaced = True
                    await _shaped(error, _request_id(scope))(scope, receive, send)
                    return
            if not (replaced and message["type"] == "http.response.body"):
                await send(message)

        await self.app(scope, receive, watching)
        if not started:
            await _lost_response(_request_id(scope))(scope, receive, send)


def _lost_response(request_id: str | None):
    from models.errors import Overloaded

    lost = Overloaded("the gateway replica serving this request was lost before it answered; retry shortly")
    return _shaped(lost, request_id)


def _shaped(error, request_id: str | None):
    from deployments.gateway.errors import domain_response

    response = domain_response(error, request_id)
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response


def _proxy_error(start: dict):
    """The domain error for a response start that is one of the proxy's own plain-text answers."""
    status = start["status"]
    if status not in (408, 429, 503):  # every answer passes here: the common case costs one test
        return None
    from models.errors import Overloaded, RequestTimeout, Throttled

    headers = {bytes(k).lower(): bytes(v) for k, v in start.get("headers", ())}
    if not headers.get(b"content-type", b"").startswith(b"text/plain"):
        return None
    retry_after = _seconds(headers.get(b"retry-after"))
    if status == 408:
        return RequestTimeout("the request did not complete within the server's request timeout")
    if status == 429:
        return Throttled(
            "the gateway's queue is full; retry shortly", retry_after=retry_after, reason="queue_full"
        )
    if status == 503:
        message = "the gateway's queue is full or no gateway replica is ready; retry shortly"
        return Overloaded(message, retry_after=retry_after)
    return None


def _seconds(value: bytes | None) -> float:
    try:
        return max(1.0, float(value or 1))
    except ValueError:
        return 1.0


def malformed_request_answer(message: str, default_headers=()) -> bytes:
    """The whole HTTP answer to a request uvicorn could not parse: 400 in the error shape, with a
    new request id, and the connection closed (the framing is lost, nothing after it can be read)."""
    from models.errors import InvalidInput

    request_id = str(uuid.uuid4())
    response = _shaped(InvalidInput(f"malformed HTTP request: {message}"), request_id)
    lines = [b"HTTP/1.1 400 Bad Request\r\n"]
    headers = [*default_headers, *response.raw_headers, (b"connection", b"close")]
    lines += [bytes(name) + b": " + bytes(value) + b"\r\n" for name, value in headers]
    return b"".join(lines) + b"\r\n" + response.body


def _send_400_response(self, msg: str) -> None:
    """uvicorn's ``send_400_response`` (the same signature in both protocols), in the error shape."""
    self.transport.write(malformed_request_answer(msg, self.server_state.default_headers))
    self.transport.close()


def answer_malformed_requests_in_error_shape() -> None:
    """Make uvicorn's HTTP protocols (httptools and h11; the proxy takes whichever uvicorn picks)
    answer an unparseable request with :func:`malformed_request_answer`. Only this process's
    uvicorn changes: the callback runs in Serve's proxy."""
    import importlib

    for module, name in (("h11_impl", "H11Protocol"), ("httptools_impl", "HttpToolsProtocol")):
        try:  # httptools is optional for uvicorn: without it, only h11 serves
            protocol = getattr(importlib.import_module(f"uvicorn.protocols.http.{module}"), name)
        except ImportError:
            continue
        protocol.send_400_response = _send_400_response


ROUTES_PENDING_RETRY_S = 1


async def _not_found_or_starting(self, proxy_request):
    """``HTTPProxy.not_found_response``, but 503 + Retry-After while the route table is empty."""
    from ray.serve._private.http_util import convert_object_to_asgi_messages
    from ray.serve._private.proxy_request_response import ResponseStatus

    ready, _ = self.proxy_router.ready_for_traffic(is_head=True)
    if ready:
        async for message in _ORIGINAL_NOT_FOUND[0](self, proxy_request):
            yield message
        return
    retry = [(b"retry-after", str(ROUTES_PENDING_RETRY_S).encode())]
    for message in convert_object_to_asgi_messages(
        "this proxy has just started and has no routes yet", status_code=503, extra_headers=retry
    ):
        yield message
    yield ResponseStatus(code=503, is_error=True)


_ORIGINAL_NOT_FOUND: list = []


def answer_unrouted_requests_with_503_until_routes_arrive() -> None:
    """Replace this process's ``HTTPProxy.not_found_response`` with :func:`_not_found_or_starting`
    (once: the callback may run again)."""
    from ray.serve._private.proxy import HTTPProxy

    if not _ORIGINAL_NOT_FOUND:
        _ORIGINAL_NOT_FOUND.append(HTTPProxy.not_found_response)
        HTTPProxy.not_found_response = _not_found_or_starting


def middlewares() -> list[Middleware]:
    """Serve's HTTP proxy callback: the middlewares it wraps its ASGI app in (and, as the one hook
    Serve runs in the proxy before it serves, the error shape of uvicorn's own 400 and the 503 of a
    proxy that has no routes yet)."""
    answer_malformed_requests_in_error_shape()
    answer_unrouted_requests_with_503_until_routes_arrive()
    return [Middleware(AnswerLostRequests)]
