"""How a route is declared, and what the gateway derives from its routes when the app is built.

``post(router, path, body=..., modality=...)`` (and ``get``, ``delete``) declares a ``GatewayRoute``:
an ``APIRoute`` that carries its body schema, the modality its metrics and in-flight budget go by,
and whether it answers without an API key. Nothing is recorded anywhere else: ``RouteTable.of``
reads the app's routes once the routers are included, for the body schemas the OpenAPI spec must
describe, the modality of a request before routing has run (admission budgets by it) and the paths
that need no API key; after routing, the metrics read the modality off the matched route.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from starlette.routing import BaseRoute, compile_path

from deployments.gateway import spec
from deployments.gateway.parsing import check_raw_field, parse_body

# Pages no route of ours declares that need no API key: the docs, the spec and the playground
# (webui.py), and the prefixes of their static assets.
OPEN_PAGES = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/ui"})
OPEN_PREFIXES: tuple[str, ...] = ("/ui/", "/docs/static/")


class GatewayRoute(APIRoute):
    """A route with what the gateway needs to know of it: ``body``, the schema the route parses itself
    (``body_of``), for the OpenAPI spec; ``modality``, the label of its metrics and the in-flight
    budget it counts against; ``open``, a probe that answers without an API key; ``raw``, the media
    field an ``application/octet-stream`` body fills (the image routes)."""

    def __init__(
        self,
        path: str,
        endpoint,
        *,
        body: type[BaseModel] | None = None,
        modality: str = "none",
        open: bool = False,
        raw: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.body, self.modality, self.open, self.raw = body, modality, open, raw


def body_of(schema: type[BaseModel]):
    """A dependency that reads, parses and validates the request body as ``schema`` (JSON or multipart)."""

    async def read(request: Request) -> BaseModel:
        return await parse_body(request, schema, getattr(request.scope.get("route"), "raw", None))

    return Depends(read)


def _declare(
    router: APIRouter, method: str, path: str, *, body=None, modality: str, open=False, raw=None, **kwargs
):
    """A decorator that adds the endpoint to ``router`` as a ``GatewayRoute`` carrying the metadata."""
    route_class = functools.partial(GatewayRoute, body=body, modality=modality, open=open, raw=raw)

    def declare(endpoint):
        router.add_api_route(path, endpoint, methods=[method], route_class_override=route_class, **kwargs)
        return endpoint

    return declare


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
    if raw:
        check_raw_field(body, raw)
    extra = spec.body(body, multipart=multipart, raw=raw)
    return _declare(
        router, "POST", path, body=body, modality=modality, raw=raw, openapi_extra=extra, **kwargs
    )


def get(router: APIRouter, path: str, *, modality: str = "none", open: bool = False, **kwargs):
    """``open``: probes that answer without an API key."""
    return _declare(router, "GET", path, modality=modality, open=open, **kwargs)


def action(router: APIRouter, path: str, *, modality: str = "none", **kwargs):
    """A POST without a body (an action on a resource, e.g. cancelling a batch)."""
    return _declare(router, "POST", path, modality=modality, **kwargs)


def delete(router: APIRouter, path: str, *, modality: str = "none", **kwargs):
    return _declare(router, "DELETE", path, modality=modality, **kwargs)


def route_modality(route: BaseRoute | None) -> str:
    """The modality label of a matched route (``scope["route"]``); "none" for pages and no route."""
    return route.modality if isinstance(route, GatewayRoute) else "none"


@dataclass(frozen=True)
class RouteTable:
    """What the gateway derives from an app's declared routes, read once when the app is built."""

    bodies: tuple[type[BaseModel], ...]  # the schemas routes parse themselves, each once
    modalities: tuple[tuple[re.Pattern, str], ...]  # path pattern -> modality, in routing order
    open_paths: frozenset[str]

    @classmethod
    def of(cls, routes: Sequence[BaseRoute]) -> RouteTable:
        """``routes``: ``app.routes`` (included routers are walked into, with their prefixes)."""
        declared = [
            (context.path, context.original_route)
            for context in iter_route_contexts(routes)
            if isinstance(context.original_route, GatewayRoute)
        ]
        bodies = {route.body.__name__: route.body for _, route in declared if route.body is not None}
        return cls(
            bodies=tuple(bodies.values()),
            modalities=tuple((compile_path(path)[0], route.modality) for path, route in declared),
            open_paths=OPEN_PAGES | {path for path, route in declared if route.open},
        )

    def modality_of(self, request: Request) -> str:
        """The modality of the route a request is for, before routing has run (the admission middleware
        budgets by it), matched against the declared path templates; "none" for paths no route declares."""
        path = app_path(request)
        return next((modality for pattern, modality in self.modalities if pattern.match(path)), "none")

    def is_open(self, path: str) -> bool:
        """Whether ``path`` (relative to the app's route prefix) needs no API key: probes, docs and the
        playground's static files (never a path that climbs out of them with '..')."""
        if path in self.open_paths:
            return True
        return path.startswith(OPEN_PREFIXES) and ".." not in path.split("/")


def app_path(request: Request) -> str:
    """The request's path relative to the app's route prefix (Serve's ``root_path``)."""
    return request.url.path.removeprefix(request.scope.get("root_path", ""))
