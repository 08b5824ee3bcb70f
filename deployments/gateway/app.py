"""The gateway's FastAPI app: every feature's router, the one error mapping, admission and the spec.

``create_app(services)`` runs inside each gateway replica (``Gateway.__serve_build_asgi_app__``), so
the routes reach that replica's services through ``app.state``; ``create_app()`` without services
builds the same app for the committed OpenAPI spec.
"""

from __future__ import annotations

from api import schemas as s
from config.settings import GatewaySettings
from deployments.gateway import errors, openapi, routing, webui
from deployments.gateway.admission import AdmitAndMeasure
from deployments.gateway.budgets import Budgets
from deployments.gateway.limits import Limits, RequestLimits
from deployments.gateway.routes import ROUTERS
from deployments.gateway.services import GatewayServices

DESCRIPTION = "Multimodal inference on Ray Serve: vision, text and audio deployments behind one gateway."


def create_app(services: GatewayServices | None = None) -> errors.GatewayApp:
    app = errors.GatewayApp(
        title="mmserve", version="0.1.0", description=DESCRIPTION, docs_url=None, redoc_url=None
    )
    app.state.services = services
    app.state.budgets = None if services is None else _budgets(services)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    webui.install(app)  # the playground at /ui/ and the docs, with local assets
    app.add_middleware(AdmitAndMeasure)
    settings = services.settings if services is not None else GatewaySettings()
    app.add_middleware(RequestLimits, limits=Limits(**settings.request_limits()))  # outermost: runs first
    openapi.install(app, [s.ErrorResponse, *routing.BODY_SCHEMAS.values()])
    return app


def _budgets(services: GatewayServices) -> Budgets:
    settings = services.settings
    return Budgets(settings.inflight_budgets, settings.max_inflight, retry_after_s=settings.retry_after_s)
