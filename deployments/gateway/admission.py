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
from deployments import tenancy, tracing
from deployments.gateway import calls, errors, routing
from deployments.metrics import observe_refusal, observe_request
from deployments.quota import LEASE_S
from models.errors import MMServeError, Throttled, Unauthorized


def _limit_message(tenant: Tenant, limit: str, wait: float) -> str:
    if limit == "max_concurrent":
        return (
            f"tenant '{tenant.id}' already has {tenant.max_concurrent} requests in flight (its "
            f"max_concurrent); retry after {wait:.2f}s"
        )
    rate = tenant.rate_limit
    return (
        f"tenant '{tenant.id}' is over its rate limit of {rate.requests_per_second:g} requests/s "
        f"(burst {rate.burst}); retry after {wait:.2f}s"
    )


class Admission:
    """Who is calling (API key -> tenant) and whether their quota admits one more request.

    Concurrency leases are short-lived in the QuotaKeeper and renewed here while their requests
    run, so a gateway replica that dies frees its tenants' slots within seconds. Failed
    authentications are throttled (``tenancy.FailedLogins``: 429 instead of 401 past a limit); a
    valid key never is."""

    def __init__(
        self,
        directory: tenancy.Directory | None,
        quota: DeploymentHandle | None,
        *,
        failures: tenancy.FailedLogins | None = None,
    ) -> None:
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
            reason = "tenant_concurrency" if limit == "max_concurrent" else "tenant_rate"
            raise Throttled(_limit_message(tenant, limit, wait), retry_after=wait, reason=reason)
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


def _route(scope) -> str:
    return getattr(scope.get("route"), "path", "unmatched")


def _replay(body: bytes, receive):
    """``receive`` for the app after admission read the body: the body once, then the client's own
    (which waits for a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


class AdmitAndMeasure:
    """Pure ASGI middleware: authenticate and admit before any body is read; count requests, errors,
    latency and throttling per route and tenant. (Starlette's ``BaseHTTPMiddleware`` ran every
    request through an extra task and memory streams: CPU each request paid, refusals included.)
    ``routes``: the app's routes, for the paths that need no key and each request's modality."""

    def __init__(self, app, *, routes: routing.RouteTable) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, seen = time.perf_counter(), {"status": 500, "tenant": "anonymous"}

        async def send_and_see(message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                tracing.answer_header(message)
            await send(message)

        try:
            await self._admitted(scope, receive, send_and_see, seen)
        finally:
            observe_request(
                _route(scope),
                routing.route_modality(scope.get("route")),
                seen["status"],
                time.perf_counter() - started,
                tenant=seen["tenant"],
            )

    async def _admitted(self, scope, receive, send, seen: dict) -> None:
        request = Request(scope, receive)
        if self.routes.is_open(routing.app_path(request)):  # probes, docs and the playground's files
            return await self.app(scope, receive, send)
        services, lease = request.app.state.services, None
        with contextlib.ExitStack() as held:
            try:
                modality = self.routes.modality_of(request)
                with tracing.span("admission", modality=modality):
                    receive, lease = await _admit(request, modality, receive, held, seen)
            except MMServeError as err:  # refused at admission: 401, 403, 429 or 503 (over budget)
                observe_refusal(err, routing.route_modality(scope.get("route")), seen["tenant"])
                return await errors.domain_response(err)(scope, receive, send)
            try:
                await self.app(scope, receive, send)
            finally:
                if lease is not None:
                    services.admission.release(seen["tenant"], lease)


async def _admit(request: Request, modality: str, receive, held: contextlib.ExitStack, seen: dict):
    """Who is calling, the request's deadline, its body (within the limits of limits.py), a budget
    slot and a quota lease: the ``receive`` the app then reads the body from, and the lease.

    A modality already at its budget is refused before the body is read (a refusal costs no body
    read). Otherwise the body comes first, then the slot: a client still sending its body is not
    work yet, and must not hold a slot its modality needs."""
    services = request.app.state.services
    admitted = services.admission.authenticate(request.headers, _address(request))
    seen["tenant"] = admitted.id
    tracing.set_attributes(tenant_id=admitted.id)
    calls.start_deadline(
        calls.request_timeout(request.headers.get(calls.TIMEOUT_HEADER), services.settings.request_timeout_s)
    )
    budgets = request.app.state.budgets
    budgets.check(modality)
    receive = _replay(await request.body(), receive)
    held.enter_context(budgets.slot(modality))
    lease = await services.admission.acquire(admitted)
    tenancy.bind(request.scope, admitted)
    return receive, lease


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
