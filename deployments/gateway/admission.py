"""What wraps every request: admission (API key, the route modality's in-flight budget, quota)
before any body is read, and metrics."""
from __future__ import annotations

import contextlib
import time

from starlette.requests import Request

from deployments import tenancy
from deployments.gateway import calls, errors, routing
from deployments.metrics import observe_request, observe_throttled
from models.errors import MMServeError, Throttled


def _is_open(request: Request) -> bool:
    """Probes and docs need no key (paths relative to the app's route prefix)."""
    return request.url.path.removeprefix(request.scope.get("root_path", "")) in routing.OPEN_PATHS


def _route(request: Request) -> str:
    return getattr(request.scope.get("route"), "path", "unmatched")


async def admit_and_measure(request: Request, call_next):
    """Authenticate and admit before any body is read; count requests, errors, latency and
    throttling per route and tenant."""
    admission = request.app.state.services.admission
    started, status, tenant, lease = time.perf_counter(), 500, "anonymous", None
    try:
        with contextlib.ExitStack() as held:
            if not _is_open(request):
                admitted = admission.authenticate(request.headers)
                tenant = admitted.id
                calls.start_deadline(calls.request_timeout(request.headers.get(calls.TIMEOUT_HEADER),
                                                           request.app.state.services.settings.request_timeout_s))
                held.enter_context(request.app.state.budgets.slot(routing.modality_of(request)))
                lease = await admission.acquire(admitted)
                tenancy.bind(admitted)
            response = await call_next(request)
        status = response.status_code
        return response
    except MMServeError as err:  # refused at admission: 401, 403, 429 or 503 (over budget)
        if isinstance(err, Throttled):
            observe_throttled(tenant)
        response = errors.domain_response(err)
        status = response.status_code
        return response
    finally:
        if lease is not None:
            admission.release(tenant, lease)
        route = _route(request)
        observe_request(route, routing.MODALITY.get(route, "none"), status, (time.perf_counter() - started) * 1000,
                        tenant=tenant)
