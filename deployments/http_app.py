"""The gateway's FastAPI app and what wraps every request: admission (API key, quota) and metrics.

Route modules register their routes on ``app``; ``deployments.gateway`` then freezes it with
``@serve.ingress``. The middleware reaches the serving ``Gateway`` instance through Serve's replica
context, so admission uses that replica's tenant directory and quota handle.
"""
from __future__ import annotations

import time

from fastapi import FastAPI, Request
from ray import serve

from deployments import http_errors, tenancy
from deployments.metrics import observe_request, observe_throttled
from models.errors import MMServeError, Throttled

app = FastAPI(title="mmserve", version="0.1.0",
              description="Multimodal inference on Ray Serve: vision, text and audio deployments behind one gateway.")
http_errors.install(app)

OPEN_PATHS = ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json")


def _is_open(request: Request) -> bool:
    """Probes and docs need no key (paths relative to the app's route prefix)."""
    return request.url.path.removeprefix(request.scope.get("root_path", "")) in OPEN_PATHS


def _route(request: Request) -> str:
    return getattr(request.scope.get("route"), "path", "unmatched")


@app.middleware("http")
async def _admit_and_measure(request: Request, call_next):
    """Authenticate and admit before any body is read; count requests, errors, latency and
    throttling per route and tenant."""
    started, status, tenant = time.perf_counter(), 500, "anonymous"
    lease = None
    gateway = serve.get_replica_context().servable_object
    try:
        if not _is_open(request):
            admitted = gateway.authenticate(request.headers)
            tenant = admitted.id
            lease = await gateway.acquire(admitted)
            tenancy.bind(admitted)
        response = await call_next(request)
        status = response.status_code
        return response
    except MMServeError as err:  # refused at admission: 401, 403 or 429
        if isinstance(err, Throttled):
            observe_throttled(tenant)
        response = http_errors.domain_response(err)
        status = response.status_code
        return response
    finally:
        if lease is not None:
            gateway.release(tenant, lease)
        observe_request(_route(request), status, (time.perf_counter() - started) * 1000, tenant=tenant)
