"""The one place that maps errors to HTTP: every error leaves as ``{"error": {type, message, param, request_id}}``."""

from __future__ import annotations

import json
import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import MediaError, TemplateError
from deployments import request_ids, tenancy
from deployments.metrics import observe_refusal
from models.errors import (
    DeadlineExceeded,
    Forbidden,
    Incompatible,
    InvalidInput,
    MMServeError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PoisonRequest,
    RequestTimeout,
    Throttled,
    Unauthorized,
    Unavailable,
    UnsupportedMedia,
    safe_text,
)

log = logging.getLogger("ray.serve")

STATUS: dict[type[MMServeError], int] = {
    InvalidInput: 400,
    Incompatible: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    UnsupportedMedia: 415,
    PoisonRequest: 422,
    Throttled: 429,
    Overloaded: 503,
    Unavailable: 503,
    DeadlineExceeded: 504,
}


SCHEMA_VIOLATION = 422  # the body does not match the route's schema (pydantic / FastAPI validation)


def statuses_by_class() -> dict[str, int]:
    """Error class name -> status, for work answered outside a request (a batch's error file): the
    domain errors, and pydantic's ``ValidationError`` as the schema violation it is online."""
    return {
        **{cls.__name__: code for cls, code in STATUS.items()},
        ValidationError.__name__: SCHEMA_VIOLATION,
    }


def documented_errors() -> dict[str, str]:
    """Status code -> what it means, for every error a route with a body can answer."""
    described: dict[int, list[str]] = {SCHEMA_VIOLATION: ["the body does not match the route's schema"]}
    for cls, code in STATUS.items():
        described.setdefault(code, []).append(
            (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".")
        )
    return {str(code): "; ".join(texts) for code, texts in sorted(described.items())}


def error_response(
    status: int,
    error_type: str,
    message: str,
    param: str | None = None,
    headers: dict | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    """The one error body. Message and param are made encodable (they may quote the caller's input,
    e.g. a dict key in a validation error's location): an unencodable one would turn the answer into
    a plain-text 500. ``request_id`` is the one Serve's proxy echoes in ``X-Request-ID``: by default
    the request this replica serves now (the proxy's own answers pass it)."""
    body = {
        "error": {
            "type": error_type,
            "message": safe_text(message),
            "param": None if param is None else safe_text(param),
            "request_id": request_id or request_ids.current(),
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _domain_cause(exc: BaseException) -> MMServeError | None:
    """The domain error itself, also when it crossed a Ray handle (wrapped in RayTaskError)."""
    for candidate in (exc, getattr(exc, "cause", None), exc.__cause__):
        if isinstance(candidate, MMServeError) and hasattr(candidate, "message"):
            return candidate
    return None


def _status_for(err: MMServeError) -> int:
    return next((code for cls, code in STATUS.items() if isinstance(err, cls)), 400)


def _validation_param(errors: list[dict]) -> str | None:
    loc = [str(part) for part in errors[0].get("loc", ()) if part != "body"] if errors else []
    return ".".join(loc) or None


def _validation_message(errors: list[dict]) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e['msg']}"
        for e in errors[:5]
    )


def media_invalid(param: str, exc: ValueError) -> InvalidInput:
    """The one error for undecodable base64 / data URLs (and bad templates), whichever route or field
    carried them."""
    return InvalidInput(f"'{param}': {exc}", param=param)


def _content_error(errors: list[dict]) -> InvalidInput | None:
    """Unusable content the schema found (undecodable media, a bad prompt template): 400, not 422."""
    for error in errors:
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, (MediaError, TemplateError)):
            return media_invalid(_validation_param([error]) or "body", cause)
    return None


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors()
    content = _content_error(errors)
    if content is not None:
        return domain_response(content)
    return error_response(
        SCHEMA_VIOLATION, "invalid_request_error", _validation_message(errors), _validation_param(errors)
    )


async def _on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, kind, str(exc.detail), headers=getattr(exc, "headers", None))


def domain_response(err: MMServeError, request_id: str | None = None) -> JSONResponse:
    """The response for a domain error (also used by the admission middleware and the proxy)."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, Unauthorized) else None
    if isinstance(err, (Throttled, Overloaded)):
        headers = {"Retry-After": str(max(1, math.ceil(err.retry_after)))}
    status = _status_for(err)
    return error_response(status, err.error_type, err.message, err.param, headers, request_id)


async def _on_any(request: Request, exc: Exception) -> JSONResponse:
    observe_refusal(
        exc, getattr(request.scope.get("route"), "modality", "none"), tenancy.tenant_id(request.scope)
    )
    return response_for(exc)


def response_for(exc: BaseException) -> JSONResponse:
    """The error answer for any exception: its domain error, Serve's refusals as 503, else 500."""
    domain = _domain_cause(exc)
    if domain is not None:
        return domain_response(domain)
    overload = as_overload(exc)
    if overload is not None:
        return domain_response(overload)
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", f"internal error ({type(exc).__name__})")


def error_event(exc: BaseException) -> dict:
    """The error of a stream whose 200 already went out: the body ``response_for`` would have
    answered, with its status in it (``{"error": {...}, "status": 503}``)."""
    response = response_for(exc)
    return {**json.loads(bytes(response.body)), "status": response.status_code}


def as_overload(exc: BaseException) -> Overloaded | None:
    """Serve's refusals (a deployment's bounded queue is full, or it has no replica to take the
    request) and a replica lost under a request, as the domain error: 503 with Retry-After."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, BackPressureError):
        return Overloaded(
            f"the service is at capacity ({exc.message}); retry shortly", retry_after=exc.retry_after_s or 1.0
        )
    if isinstance(exc, DeploymentUnavailableError):
        return Overloaded("a deployment this request needs has no replica ready; retry shortly")
    if isinstance(exc, (ActorDiedError, ActorUnavailableError, RayActorError)):
        return Overloaded("a model replica was lost while serving this request; retry shortly")
    return None


class GatewayApp(FastAPI):
    """The gateway's FastAPI app. Serve's replica registers its own handlers for its
    service-unavailable exceptions (``BackPressureError``, ``DeploymentUnavailableError``: plain-text
    bodies) on the app after ``__serve_build_asgi_app__`` built it; the handlers ``install`` pinned
    stay, so every refusal keeps the one error shape."""

    pinned: frozenset = frozenset()

    def add_exception_handler(self, exc_class_or_status_code, handler) -> None:
        if exc_class_or_status_code in self.pinned and exc_class_or_status_code in self.exception_handlers:
            log.info(
                "keeping the gateway's handler for %s", getattr(exc_class_or_status_code, "__name__", "")
            )
            return
        super().add_exception_handler(exc_class_or_status_code, handler)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    # Specific classes are answered by Starlette's ExceptionMiddleware; only true 500s reach the
    # catch-all (which Starlette re-raises for logging after the response is sent).
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RayServeException

    serve_refusals = (BackPressureError, DeploymentUnavailableError)
    for cls in (MMServeError, RayTaskError, RayActorError, RayServeException, *serve_refusals, Exception):
        app.add_exception_handler(cls, _on_any)
    if isinstance(app, GatewayApp):
        app.pinned = frozenset(serve_refusals)
