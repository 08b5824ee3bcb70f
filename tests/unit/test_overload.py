"""Overload without Ray: in-flight budgets per modality, Serve's refusals in the one error shape,
bounded queues derived from the config, and the guard's check at max replicas."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import httpx
import pytest
import yaml
from fastapi import APIRouter
from ray.serve.exceptions import BackPressureError

from config.args import AppArgs
from config.settings import GatewaySettings
from config.tenants import OPEN
from deployments.gateway import routing
from deployments.gateway.app import create_app
from deployments.gateway.budgets import Budgets
from deployments.gateway.routes import ROUTERS
from graphs import guard
from graphs.app import demands
from models.errors import Overloaded


def test_a_full_modality_budget_refuses_only_that_modality():
    budgets = Budgets({"audio": 2, "image": 2}, total=10)
    budgets.enter("audio"), budgets.enter("audio")
    with pytest.raises(Overloaded, match="2 audio requests in flight") as err:
        budgets.enter("audio")
    assert err.value.retry_after == 1.0
    budgets.enter("image")  # audio's flood leaves image its own budget
    budgets.leave("audio")
    budgets.enter("audio")  # a freed slot is usable again
    assert budgets.refused["audio"] == 1


def test_the_total_caps_all_modalities_together():
    budgets = Budgets({"audio": 5, "image": 5}, total=3)
    for m in ("audio", "image", "image"):
        budgets.enter(m)
    with pytest.raises(Overloaded, match="3 requests in flight"):
        budgets.enter("audio")


def test_a_slot_is_given_back_when_the_request_fails():
    budgets = Budgets({"text": 1}, total=5)
    with pytest.raises(RuntimeError):
        with budgets.slot("text"):
            raise RuntimeError("boom")
    with budgets.slot("text"):
        pass


def _app(*extra: APIRouter, **settings):
    """The gateway app without Ray, with the routes of ``extra`` routers beside the gateway's own."""

    async def acquire(_tenant):
        return None

    admission = SimpleNamespace(
        authenticate=lambda headers, address: OPEN, acquire=acquire, release=lambda *a: None
    )
    services = SimpleNamespace(settings=GatewaySettings(**settings), admission=admission)
    return create_app(services, routers=[*ROUTERS, *extra])


@pytest.fixture
def blocking_app():
    """The gateway app with two extra routes, audio and image, that wait until released."""
    release, router = asyncio.Event(), APIRouter()

    async def wait():
        await release.wait()
        return {"ok": True}

    for path, modality in (("/t/audio", "audio"), ("/t/image", "image")):
        routing.get(router, path, modality=modality)(wait)
    return _app(router, max_inflight=10, inflight_budgets={"audio": 2, "image": 2}), release


async def test_over_budget_requests_are_refused_at_once_in_the_error_shape(blocking_app):
    app, release = blocking_app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        held = [asyncio.create_task(http.get("/t/audio")) for _ in range(2)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        refused = await asyncio.wait_for(http.get("/t/audio"), 2)  # without a budget it would wait
        took = time.perf_counter() - started
        image = asyncio.create_task(http.get("/t/image"))  # admitted: its own budget is free
        await asyncio.sleep(0.05)
        release.set()
        done = await asyncio.wait_for(asyncio.gather(*held, image), 2)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "overloaded"
    assert took < 0.05, took
    assert [r.status_code for r in done] == [200, 200, 200]


async def test_a_full_modality_refuses_without_waiting_for_the_body(blocking_app):
    """The refusal comes before the body is read: a body that never arrives is still refused at once
    (reading it first would wait for the body deadline)."""
    app, release = blocking_app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        held = [asyncio.create_task(http.get("/t/audio")) for _ in range(2)]
        await asyncio.sleep(0.05)
        sent = []

        async def receive():
            sent.append("asked for the body")
            await asyncio.sleep(3600)  # a client that never sends it

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/t/audio",
            "raw_path": b"/t/audio",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-length", b"10")],
            "client": ("127.0.0.1", 1),
            "server": ("t", 80),
            "scheme": "http",
            "http_version": "1.1",
        }
        await asyncio.wait_for(app(scope, receive, send), 1)
        release.set()
        await asyncio.gather(*held)
    assert "asked for the body" not in sent and sent[0]["status"] == 503, sent


async def test_serve_backpressure_keeps_our_shape_after_serve_adds_its_handler():
    """Serve's replica registers a plain-text handler for BackPressureError on the built app
    (replica.py, _initialize_asgi_callable); the gateway's answer must stay the one error shape."""
    app = _app()

    @app.get("/t/full")
    async def full():
        raise BackPressureError(num_queued_requests=9, max_queued_requests=8)

    def serve_handler(_request, exc):  # what Serve's replica installs
        from starlette.responses import Response

        return Response(exc.message, status_code=503)

    app.add_exception_handler(BackPressureError, serve_handler)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        r = await http.get("/t/full")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "overloaded"


def test_every_deployment_gets_a_bounded_queue_and_drain_settings():
    args = AppArgs.model_validate(
        {
            "audio": {
                "max_ongoing_requests": 8,
                "batch": {"max_batch_size": 4},
                "autoscaling": {"max_replicas": 3},
            },
            "text": {"max_queued_requests": 5},
        }
    )
    options = {name: d.serve_options() for name, d in args.deployments().items()}
    assert options["AudioModel"]["max_queued_requests"] == 24
    assert options["TextEncoder"]["max_queued_requests"] == 5
    for name, o in options.items():
        assert o["max_queued_requests"] > 0, name  # Ray's default (-1) queues without bound
        assert o["graceful_shutdown_timeout_s"] > 0 and o["graceful_shutdown_wait_loop_s"] > 0


def test_gateway_refuses_before_serve_would_queue_it():
    with pytest.raises(ValueError, match="max_inflight"):
        AppArgs.model_validate({"gateway": {"max_ongoing_requests": 16, "settings": {"max_inflight": 16}}})


def test_unknown_budget_modality_is_refused():
    with pytest.raises(ValueError, match="unknown modality"):
        GatewaySettings(inflight_budgets={"video": 3})
    assert (
        GatewaySettings(inflight_budgets={"audio": 3}).inflight_budgets["image"] > 0
    )  # others keep defaults


def test_guard_refuses_max_replicas_that_do_not_fit():
    args = AppArgs.model_validate(
        {"audio": {"num_cpus": 1, "autoscaling": {"min_replicas": 1, "max_replicas": 3}}}
    )
    found = guard.problems(demands(args), [{"CPU": 2.0}])
    assert any("maximum replicas" in f and "AudioModel 3x1" in f for f in found), found


def test_the_embedded_default_fits_two_cores_at_max_replicas():
    args = AppArgs.model_validate(yaml.safe_load(open("serve_config.yaml"))["applications"][0]["args"])
    assert guard.problems(demands(args), [{"CPU": 2.0}]) == []


async def test_the_request_deadline_reaches_handle_calls_and_answers_504():
    from deployments.gateway import calls

    cancelled, router = [], APIRouter()

    class _Slow:
        def __await__(self):
            return asyncio.sleep(10).__await__()

        def cancel(self):
            cancelled.append(True)

    @routing.get(router, "/t/slow", modality="audio")
    async def slow():
        return await calls.call(SimpleNamespace(remote=lambda: _Slow()))

    app = _app(router, request_timeout_s=30)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        started = time.perf_counter()
        r = await asyncio.wait_for(http.get("/t/slow", headers={"X-Request-Timeout": "0.2"}), 5)
        took = time.perf_counter() - started
        bad = await http.get("/t/slow", headers={"X-Request-Timeout": "later"})
    assert r.status_code == 504 and r.json()["error"]["type"] == "deadline_exceeded"
    assert 0.15 < took < 0.6 and cancelled == [True]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-request-timeout"


def test_the_route_modality_is_found_under_a_route_prefix():
    """Serve mounts the app under its route prefix (scope root_path), as in the chaos suite."""
    from starlette.requests import Request

    app = _app()
    routes = routing.RouteTable.of(app.routes)
    for path, want in (
        ("/chaos/v1/audio/transcriptions", "audio"),
        ("/chaos/v1/classify", "image"),
        ("/chaos/v1/indexes/photos/query", "any"),
        ("/v1/embeddings/text", "text"),
        ("/chaos/nowhere", "none"),
    ):
        root = "/chaos" if path.startswith("/chaos") else ""
        scope = {
            "type": "http",
            "path": path,
            "root_path": root,
            "method": "POST",
            "headers": [],
            "app": app,
            "query_string": b"",
            "server": ("t", 80),
            "scheme": "http",
        }
        assert routes.modality_of(Request(scope)) == want, path
