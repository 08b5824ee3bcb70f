"""The gateway's FastAPI app: every feature's router, the one error mapping, admission and the spec.

``create_app(services)`` runs inside each gateway replica (``Gateway.__serve_build_asgi_app__``), so
the routes reach that replica's services through ``app.state``; ``create_app()`` without services
builds the same app for the committed OpenAPI spec. What the gateway derives from its routes (body
schemas, modalities, open paths: ``routing.RouteTable``) is read from the app once its routers are in.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from api import schemas as s
from config.settings import GatewaySettings
from deployments.gateway import errors, live_speech, routing, spec, webui
from deployments.gateway.admission import AdmitAndMeasure
from deployments.gateway.budgets import Budgets
from deployments.gateway.limits import Limits, RequestLimits
from deployments.gateway.routes import ROUTERS
from deployments.gateway.services import GatewayServices

DESCRIPTION = "Multimodal inference on Ray Serve: vision, text and audio deployments behind one gateway."


def create_app(
    services: GatewayServices | None = None, routers: Sequence[APIRouter] = ROUTERS
) -> errors.GatewayApp:
    app = errors.GatewayApp(
        title="mmserve",
        version="0.1.0",
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own request span would take its parent from the client's traceparent header and
        # leave Serve's proxy and replica spans out of the trace; the gateway's spans are Serve's
        # and deployments/tracing.py's, under the replica's (docs/observability.md#traces).
        telemetry={"tracing": False},
    )
    app.state.services = services
    app.state.budgets = None if services is None else _budgets(services)
    app.state.live_sessions = live_speech.Sessions()
    errors.install(app)
    for router in routers:
        app.include_router(router)
    webui.install(app)  # the playground at /ui/ and the docs, with local assets
    routes = routing.RouteTable.of(app.routes)
    app.add_middleware(AdmitAndMeasure, routes=routes)
    settings = services.settings if services is not None else GatewaySettings()
    app.add_middleware(RequestLimits, limits=Limits(**settings.request_limits()))  # outermost: runs first
    spec.install(app, [s.ErrorResponse, *routes.bodies])
    return app


def _budgets(services: GatewayServices) -> Budgets:
    settings = services.settings
    return Budgets(settings.inflight_budgets, settings.max_inflight, retry_after_s=settings.retry_after_s)
