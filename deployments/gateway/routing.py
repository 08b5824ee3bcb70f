"""How a route is declared: its path, body schema and modality in one place, where it is defined.

``post(router, path, body=..., modality=...)`` registers the route on its feature's ``APIRouter``
and records what the rest of the gateway derives from it: the body schemas the OpenAPI spec must
describe, the modality the metrics label each route with, and the paths that need no API key.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.routing import compile_path

from deployments.gateway import openapi
from deployments.gateway.parsing import accept_raw, parse_body

BODY_SCHEMAS: dict[str, type[BaseModel]] = {}  # schema name -> schema, for the OpenAPI components
MODALITY: dict[str, str] = {}  # route path -> modality label of its metrics
OPEN_PATHS: set[str] = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/ui"}
OPEN_PREFIXES: tuple[str, ...] = ("/ui/", "/docs/static/")  # the playground's and the docs' static assets


def body_of(schema: type[BaseModel]):
    """A dependency that reads, parses and validates the request body as ``schema`` (JSON or multipart)."""

    async def read(request: Request) -> BaseModel:
        return await parse_body(request, schema)

    return Depends(read)


def post(
    router: APIRouter,
    path: str,
    *,
    body: type[BaseModel],
    modality: str,
    multipart: bool = True,
    raw: str | None = None,
    **kwargs,
):
    """``raw``: the media field an ``application/octet-stream`` body fills (the image routes), the
    other fields then come as query parameters."""
    BODY_SCHEMAS[body.__name__] = body
    MODALITY[path] = modality
    if raw:
        accept_raw(body, raw)
    extra = openapi.body(body, multipart=multipart, raw=raw)
    return router.post(path, openapi_extra=extra, **kwargs)


def get(router: APIRouter, path: str, *, modality: str = "none", open: bool = False, **kwargs):
    """``open``: probes that answer without an API key."""
    MODALITY[path] = modality
    if open:
        OPEN_PATHS.add(path)
    return router.get(path, **kwargs)


def delete(router: APIRouter, path: str, *, modality: str = "none", **kwargs):
    MODALITY[path] = modality
    return router.delete(path, **kwargs)


_PATTERNS: list[tuple[re.Pattern, str]] = []


def modality_of(request: Request) -> str:
    """The modality of the route a request is for, before routing has run (the admission middleware
    budgets by it), matched against the declared path templates; "none" for paths no route declares.
    (FastAPI's ``app.routes`` cannot tell: it holds included routers, not their routes.)"""
    if len(_PATTERNS) != len(MODALITY):
        _PATTERNS[:] = [(compile_path(path)[0], modality) for path, modality in MODALITY.items()]
    path = app_path(request)
    return next((modality for pattern, modality in _PATTERNS if pattern.match(path)), "none")


def app_path(request: Request) -> str:
    """The request's path relative to the app's route prefix (Serve's ``root_path``)."""
    return request.url.path.removeprefix(request.scope.get("root_path", ""))


def is_open(path: str) -> bool:
    """Whether ``path`` (relative to the app's route prefix) needs no API key: probes, docs and the
    playground's static files (never a path that climbs out of them with '..')."""
    if path in OPEN_PATHS:
        return True
    return path.startswith(OPEN_PREFIXES) and ".." not in path.split("/")
