"""Admission, before any body is read: who is calling (API key -> tenant), the request's deadline,
the route modality's in-flight budget and whether the tenant's quota admits one more request
(``Admission``, a service of each gateway replica), and the middleware that applies it to every
request and measures it."""
from __future__ import annotations

import asyncio
import contextlib
import time

from ray.serve.handle import DeploymentHandle
from starlette.requests import Request

from config.tenants import OPEN, Tenant
from deployments import tenancy
from deployments.gateway import calls, errors, routing
from deployments.metrics import observe_request, observe_throttled
from deployments.quota import LEASE_S
from models.errors import MMServeError, Throttled, Unauthorized


def _limit_message(tenant: Tenant, limit: str, wait: float) -> str:
    if limit == "max_concurrent":
        return (f"tenant '{tenant.id}' already has {tenant.max_concurrent} requests in flight (its max_concurrent); "
                f"retry after {wait:.2f}s")
    rate = tenant.rate_limit
    return (f"tenant '{tenant.id}' is over its rate limit of {rate.requests_per_second:g} requests/s "
            f"(burst {rate.burst}); retry after {wait:.2f}s")


class Admission:
    """Who is calling (API key -> tenant) and whether their quota admits one more request.

    Concurrency leases are short-lived in the QuotaKeeper and renewed here while their requests
    run, so a gateway replica that dies frees its tenants' slots within seconds. Failed
    authentications are throttled (``tenancy.FailedLogins``: 429 instead of 401 past a limit); a
    valid key never is."""

    def __init__(self, directory: tenancy.Directory | None, quota: DeploymentHandle | None, *,
                 failures: tenancy.FailedLogins | None = None) -> None:
        self.directory, self.quota = directory, quota
        self.failures = failures or tenancy.FailedLogins()
        self.held: dict[str, set[str]] = {}  # tenant -> leases this replica holds
        self._renewing: asyncio.Task | None = None

    def authenticate(self, headers, address: str) -> Tenant:
        """The caller's tenant. The key is checked first (one salted SHA-256, constant time) and only
        a failure meets the throttle, so a valid key passes even from an address, for a key id or at
        a moment that others' failures have throttled. A failure past a limit is Throttled (429),
        any other Unauthorized (401)."""
        if self.directory is None:
            return OPEN
        key = tenancy.key_from_headers(headers)
        try:
            return self.directory.authenticate(key)
        except Unauthorized:
            self.failures.failed(address, tenancy.throttle_key_id(key))
            raise

    async def acquire(self, tenant: Tenant) -> str | None:
        """A lease from the shared QuotaKeeper, or Throttled with the wait a retry needs."""
        if self.quota is None or (tenant.rate_limit is None and tenant.max_concurrent is None):
            return None
        rate = tenant.rate_limit.requests_per_second if tenant.rate_limit else None
        burst = tenant.rate_limit.burst if tenant.rate_limit else 1
        lease, wait, limit = await self.quota.acquire.remote(tenant.id, rate, burst, tenant.max_concurrent)
        if lease is None:
            raise Throttled(_limit_message(tenant, limit, wait), retry_after=wait)
        self.held.setdefault(tenant.id, set()).add(lease)
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.get_running_loop().create_task(self._renew_forever())
        return lease

    def release(self, tenant_id: str, lease: str) -> None:
        self.held.get(tenant_id, set()).discard(lease)
        self.quota.release.remote(tenant_id, lease)  # fire and forget: the response need not wait

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            for tenant_id, leases in list(self.held.items()):
                if leases:
                    self.quota.renew.remote(tenant_id, sorted(leases))


def _is_open(request: Request) -> bool:
    """Probes, docs and the playground's files need no key (paths relative to the app's route prefix)."""
    return routing.is_open(routing.app_path(request))


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
                address = request.client.host if request.client else "unknown"
                admitted = admission.authenticate(request.headers, address)
                tenant = admitted.id
                calls.start_deadline(calls.request_timeout(request.headers.get(calls.TIMEOUT_HEADER),
                                                           request.app.state.services.settings.request_timeout_s))
                # The body first (within the limits of limits.py), then a budget slot: a client still
                # sending its body is not work yet, and must not hold a slot its modality needs.
                await request.body()
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
