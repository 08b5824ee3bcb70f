"""Route metadata lives on the route (``routing.GatewayRoute``): the body schemas of the spec, the
modality of each request's metrics and budget and the open paths come from the app's own routes, so
two apps built from different routers know only their own."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
from fastapi import APIRouter

from api import schemas as s
from config.settings import GatewaySettings
from config.tenants import OPEN
from deployments.gateway import admission, routing
from deployments.gateway.app import create_app
from deployments.gateway.routes import ROUTERS


def _app(*extra: APIRouter):
    async def acquire(_tenant):
        return None

    checks = SimpleNamespace(authenticate=lambda headers, address: OPEN, acquire=acquire, release=print)
    services = SimpleNamespace(settings=GatewaySettings(), admission=checks)
    return create_app(services, routers=[*ROUTERS, *extra])


def test_the_table_reads_each_route_s_declaration():
    table = routing.RouteTable.of(create_app().routes)
    modality = dict((pattern.pattern, m) for pattern, m in table.modalities)
    assert modality["^/v1/audio/transcriptions$"] == "audio"
    assert modality["^/v1/chat/completions$"] == "image+text"
    assert modality["^/v1/indexes/(?P<name>[^/]+)/query$"] == "any"
    assert {"/healthz", "/readyz", "/docs", "/openapi.json"} <= table.open_paths
    assert "/v1/models" not in table.open_paths
    assert s.TranscriptionRequest in table.bodies and s.ComposeRequest in table.bodies
    assert len({b.__name__ for b in table.bodies}) == len(table.bodies)  # each schema once


def test_every_body_the_spec_documents_comes_from_a_route():
    spec = create_app().openapi()
    refs = {
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for ops in spec["paths"].values()
        for op in ops.values()
        if "requestBody" in op
    }
    assert refs == {b.__name__ for b in routing.RouteTable.of(create_app().routes).bodies}


def test_an_app_knows_only_its_own_routes():
    """No registry a decorator fills at import: a route declared for one app changes no other app."""
    router = APIRouter()

    @routing.get(router, "/t/probe", open=True, modality="audio")
    async def probe():
        return {}

    with_probe, without = routing.RouteTable.of(_app(router).routes), routing.RouteTable.of(_app().routes)
    assert with_probe.is_open("/t/probe") and not without.is_open("/t/probe")
    assert [m for p, m in with_probe.modalities if p.match("/t/probe")] == ["audio"]
    assert not [m for p, m in without.modalities if p.match("/t/probe")]


async def test_the_metrics_label_each_request_with_its_route_s_modality(monkeypatch):
    seen = []
    monkeypatch.setattr(
        admission,
        "observe_request",
        lambda route, modality, status, ms, tenant: seen.append((route, modality)),
    )
    router = APIRouter()

    @routing.get(router, "/t/audio/{name}", modality="audio")
    async def audio(name: str):
        return {"name": name}

    app = _app(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.get("/t/audio/x")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/nowhere")).status_code == 404
    assert seen == [("/t/audio/{name}", "audio"), ("/healthz", "none"), ("unmatched", "none")]
