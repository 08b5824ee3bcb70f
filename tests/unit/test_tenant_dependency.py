"""The tenant is a dependency, never ambient: a request that admission did not authenticate cannot
run as the open tenant (an operator), and the services take the tenant as an argument."""

import asyncio
import inspect
from types import SimpleNamespace

import httpx
import pytest
from starlette.requests import Request

from config.tenants import OPEN, Tenant
from deployments import tenancy
from deployments.gateway import errors, services
from deployments.gateway.routes import service
from deployments.gateway.services import encoders, fusion, media, search, speech, vision, vision_language
from models.errors import Forbidden, Unauthorized


def _request(scope_extra: dict | None = None) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], **(scope_extra or {})})


def test_the_lookup_refuses_a_request_no_tenant_was_bound_to():
    with pytest.raises(Unauthorized, match="no authenticated tenant"):
        tenancy.current_tenant(_request())
    request = _request()
    tenancy.bind(request.scope, Tenant(id="acme"))
    assert tenancy.current_tenant(request).id == "acme"


async def test_a_route_served_without_admission_does_not_run_as_the_open_operator():
    """/v1/stats is for operators, and the open tenant is one: mounted without the admission
    middleware (so no tenant was bound), the route must refuse, not fall back to the open tenant."""
    reached = []

    async def batch_stats(tenant):
        reached.append(tenant)
        return {}

    app = errors.GatewayApp()
    errors.install(app)
    app.include_router(service.router)
    app.state.services = SimpleNamespace(batch_stats=batch_stats)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        answer = await client.get("/v1/stats")
    assert answer.status_code == 401, answer.text
    assert reached == []


def test_service_methods_take_the_tenant_without_a_default():
    """Every service operation for a tenant names it as a required argument: none can fall back."""
    modules = (encoders, fusion, media, search, speech, vision, vision_language)
    classes = [
        c for m in modules for c in vars(m).values() if inspect.isclass(c) and c.__module__ == m.__name__
    ]
    checked = 0
    for cls in [*classes, services.GatewayServices]:
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            tenant = inspect.signature(fn).parameters.get("tenant")
            if tenant is not None:
                checked += 1
                assert tenant.default is inspect.Parameter.empty, f"{cls.__name__}.{name}"
    assert checked >= 20


def test_service_wide_statistics_check_the_tenant_they_are_given():
    svc = SimpleNamespace(deployments=dict)
    with pytest.raises(Forbidden, match="operator"):
        asyncio.run(services.GatewayServices.batch_stats(svc, Tenant(id="acme")))
    assert asyncio.run(services.GatewayServices.batch_stats(svc, OPEN)) == {}
