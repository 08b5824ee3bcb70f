"""Faults under load through real Ray, with stand-in models (``BatchedStub``: real ``@serve.batch``
machinery and batch counters, a sleep for a forward pass; the model does not matter here) behind
the real Gateway, configured through the real ``DeploymentArgs`` (bounded queues, drain settings).

Every request is counted: sent = succeeded + refused + failed, and failed must be 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import httpx
import psutil
import pytest
from ray import serve

from api.schemas import encode_media
from config.args import Autoscaling, DeploymentArgs, GatewayArgs
from tests.chaos.crowd import Crowd, CrowdResult, crowd_addresses, percentile
from tests.chaos.crowd import get as crowd_get
from tests.chaos.crowd import post as crowd_post
from tests.chaos.load import AUDIO, IMAGE, Load
from tests.serve_state import proxy_pid, replica_pids
from tests.stub_backends import stub_gateway, stub_model, stub_models

pytestmark = pytest.mark.slow

APP = "chaos"
DELAY_S = {"image": 0.05, "text": 0.02, "audio": 1.0}
# Audio: one in flight per gateway replica (two gateways, two audio replicas): what the audio
# replicas take without queueing, so admitted requests keep their unloaded latency.
BUDGETS = {"image": 8, "text": 8, "audio": 1, "image+text": 4, "any": 4, "none": 8}
NAMES = {"image": "ChaosVision", "text": "ChaosText", "audio": "ChaosAudio"}


def _scaling(replicas: int) -> Autoscaling:
    return Autoscaling(min_replicas=replicas, max_replicas=replicas)


def _model(
    modality: str, replicas: int, *, name: str | None = None, delay_s: float | None = None, batch: int = 4
):
    args = DeploymentArgs(
        num_cpus=0, max_ongoing_requests=8, autoscaling=_scaling(replicas), graceful_shutdown_wait_loop_s=0.2
    )
    return stub_model(
        modality,
        args,
        name=name or NAMES[modality],
        batch=batch,
        delay_s=DELAY_S[modality] if delay_s is None else delay_s,
    )


def _gateway(vision, text, audio, *, name: str, replicas: int, budgets: dict):
    args = GatewayArgs(
        num_cpus=0,
        autoscaling=_scaling(replicas),
        settings={"max_inflight": 24, "inflight_budgets": budgets, "embed_cache_size": 0},
    )
    return stub_gateway(vision, text, audio, args, name=name)


def _chaos_app(model_replicas: dict[str, int]):
    models = {m: _model(m, model_replicas[m]) for m in NAMES}
    return _gateway(
        models["image"], models["text"], models["audio"], name="ChaosGateway", replicas=2, budgets=BUDGETS
    )


def _wait_replaced(app: str, deployment: str, killed: int, want: int, limit_s: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        pids = replica_pids(app, deployment)
        if len(pids) >= want and killed not in pids:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{deployment} was not replaced within {limit_s}s")


@pytest.fixture(scope="module")
def chaos_url(ray_cluster):
    serve.run(_chaos_app({"image": 2, "text": 2, "audio": 2}), name=APP, route_prefix="/chaos")
    yield f"http://127.0.0.1:{ray_cluster['port']}/chaos"
    serve.delete(APP)


def _report(name: str, row: dict) -> None:
    print(f"\nCHAOS {name}: {json.dumps(row)}")


def _accounted(tally) -> None:
    assert tally.sent == tally.succeeded + tally.refused + tally.failed, tally.row()
    assert tally.failed == 0 and tally.hung == 0, tally.row()


# ---- overload -----------------------------------------------------------------------------------
async def _flood(url: str, kind: str, n: int) -> list[tuple[int, float, httpx.Response]]:
    async def one(http):
        started = time.perf_counter()
        if kind == "audio":
            r = await http.post(
                "/v1/audio/transcriptions", files={"file": ("a.wav", AUDIO)}, data={"response_format": "json"}
            )
        else:
            r = await http.post("/v1/classify", files={"image": ("i.png", IMAGE)}, data={"top_k": "1"})
        return r.status_code, time.perf_counter() - started, r

    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        await http.get("/healthz")  # open a connection first
        return await asyncio.gather(*(one(http) for _ in range(n)))


def _probe(url: str, kind: str) -> tuple[int, float, httpx.Response]:
    """One request on its own connection, timed from the client (not slowed by the flood's client)."""
    with httpx.Client(base_url=url, timeout=30) as http:
        http.get("/healthz")  # connect first: the timing is the request, not the handshake
        started = time.perf_counter()
        if kind == "audio":
            r = http.post(
                "/v1/audio/transcriptions", files={"file": ("a.wav", AUDIO)}, data={"response_format": "json"}
            )
        else:
            r = http.post("/v1/classify", files={"image": ("i.png", IMAGE)}, data={"top_k": "1"})
        return r.status_code, time.perf_counter() - started, r


def test_overload_is_refused_fast_and_keeps_other_modalities_and_latency(chaos_url):
    """10x the audio the gateways admit at once arrives in one burst; while it is in flight, probes
    time an audio refusal and an image request from a quiet client."""
    gateways = replica_pids(APP, "ChaosGateway")
    rss_before = sum(psutil.Process(p).memory_info().rss for p in gateways)
    unloaded = min(_probe(chaos_url, "audio")[1] for _ in range(2))
    capacity = 2 * BUDGETS["audio"]  # audio requests the two gateway replicas admit at once
    flood: list = []
    burst = threading.Thread(
        target=lambda: flood.extend(asyncio.run(_flood(chaos_url, "audio", 10 * capacity)))
    )
    burst.start()
    time.sleep(0.5)  # the burst is in: its admitted requests hold every audio slot for about a second
    probes = [_probe(chaos_url, "audio") for _ in range(8)] + [_probe(chaos_url, "image") for _ in range(3)]
    burst.join()
    rss_after = sum(psutil.Process(p).memory_info().rss for p in gateways)
    everything = flood + probes
    refused = [(t, r) for s, t, r in everything if s == 503]
    probe_refusal_ms = sorted(t * 1000 for s, t, _ in probes[:8] if s == 503)
    admitted = sorted(t for s, t, _ in flood if s == 200)
    row = {
        "sent": len(everything),
        "succeeded": sum(s == 200 for s, _, _ in everything),
        "refused": len(refused),
        "failed": sum(s not in (200, 503) for s, _, _ in everything),
        "probe_refusal_ms": [round(x, 1) for x in probe_refusal_ms],
        "burst_refusal_ms_p50": round(
            sorted(t * 1000 for s, t, _ in flood if s == 503)[len(refused) // 2 - 4], 1
        ),
        "admitted_s_p50": round(admitted[len(admitted) // 2], 3),
        "unloaded_s": round(unloaded, 3),
        "image_during_flood_s": [round(t, 3) for _, t, _ in probes[8:]],
        "gateway_rss_growth_mb": round((rss_after - rss_before) / 2**20, 1),
    }
    _report("overload 10x audio + image", row)
    assert row["failed"] == 0 and row["sent"] == row["succeeded"] + row["refused"] + row["failed"], row
    assert len(refused) >= 5 * capacity, row  # most of a 10x burst is refused, not queued
    for _, r in refused:
        assert r.headers.get("retry-after") == "1" and r.json()["error"]["type"] == "overloaded"
    assert len(probe_refusal_ms) >= 6 and probe_refusal_ms[-2] < 50, row
    assert all(s == 200 for s, _, _ in probes[8:]), "an audio flood must not starve image requests"
    assert row["admitted_s_p50"] < 2 * unloaded + 0.2, row  # + one router imbalance: two on one replica
    assert row["gateway_rss_growth_mb"] < 50, row


def _crowd(chaos_url: str, *, clients: int, seconds: float, honour_retry_after_s: float) -> CrowdResult:
    port, prefix = int(chaos_url.split(":")[2].split("/")[0]), "/" + chaos_url.split("/", 3)[3]
    body = json.dumps({"image": encode_media(IMAGE), "top_k": 1}).encode()
    crowd = Crowd(
        port,
        crowd_post(f"{prefix}/v1/classify", body, "application/json"),
        crowd_addresses(clients),
        seconds=seconds,
        honour_retry_after_s=honour_retry_after_s,
        probe=crowd_get(f"{prefix}/readyz"),
    )
    return asyncio.run(crowd.run())


def test_a_crowd_from_200_addresses_is_refused_and_readyz_stays_ready(chaos_url):
    """200 closed-loop classify clients, one per loopback address, for 10 s against gateways that
    admit 16 image requests at once; clients wait as Retry-After asks, as the mmserve client does.
    Issue 22 saw the first refusal after 7-10 s, refusals taking 3-10 s, and /readyz answering 503
    for every model (its pings queued behind the work). Every request must end as admitted or
    refused, the first refusal come within 1 s, and /readyz stay 200. The latencies are printed,
    not asserted: on 2 shared cores they measure the Python proxy's CPU per request (issue 24)."""
    with httpx.Client(base_url=chaos_url, timeout=30) as http:
        http.get("/healthz")
        unloaded = []
        for _ in range(5):
            started = time.perf_counter()
            assert (
                http.post("/v1/classify", files={"image": ("i.png", IMAGE)}, data={"top_k": "1"}).status_code
                == 200
            )
            unloaded.append(time.perf_counter() - started)
    result = _crowd(chaos_url, clients=200, seconds=10.0, honour_retry_after_s=1.0)
    start = min(r.started for r in result.requests)
    refused, admitted = result.of(503), result.of(200)
    row = {
        "sent": len(result.requests),
        "admitted": len(admitted),
        "refused": len(refused),
        "other": sorted({r.status for r in result.requests} - {200, 503}),
        "broken": result.failures,
        "first_refusal_s": round(min(r.finished for r in refused) - start, 3) if refused else None,
        "refusal_ms_p50": round(1000 * percentile([r.seconds for r in refused], 0.5), 1),
        "refusal_ms_p95": round(1000 * percentile([r.seconds for r in refused], 0.95), 1),
        "admitted_s_p50": round(percentile([r.seconds for r in admitted], 0.5), 3),
        "admitted_s_p99": round(percentile([r.seconds for r in admitted], 0.99), 3),
        "unloaded_s": round(sorted(unloaded)[2], 3),
        "readyz_s_p50": round(percentile([r.seconds for r in result.probes], 0.5), 3),
        "readyz_s_max": round(max(r.seconds for r in result.probes), 3),
        "readyz_statuses": sorted({r.status for r in result.probes}),
    }
    _report("crowd of 200 addresses", row)
    assert row["other"] == [] and row["broken"] == 0, row
    assert row["readyz_statuses"] == [200], row
    assert row["first_refusal_s"] is not None and row["first_refusal_s"] < 1.0, row


# ---- kill -9 under load ---------------------------------------------------------------------------
def test_kill_9_a_replica_of_each_deployment_under_load_fails_nothing(chaos_url):
    recovery = {}
    with Load(chaos_url, workers=2, timeout_s=20, limit_s=150) as load:
        time.sleep(2)
        for deployment in ("ChaosVision", "ChaosText", "ChaosAudio", "ChaosGateway"):
            victim = replica_pids(APP, deployment)[0]
            os.kill(victim, signal.SIGKILL)
            recovery[deployment] = round(_wait_replaced(APP, deployment, victim, want=2), 1)
            time.sleep(1)
        tally = load.stop()
    _report("kill -9 one replica of each deployment", {**tally.row(), "replaced_after_s": recovery})
    _accounted(tally)
    assert tally.succeeded > 20


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_port_back(url: str, killed_at: float, limit_s: float = 60) -> float:
    """Seconds from the kill until the HTTP port answers again (after it was seen closed)."""
    while _answers(url) and time.monotonic() - killed_at < 2:
        time.sleep(0.05)  # the dying process may still hold the socket for a moment
    while not _answers(url):
        assert time.monotonic() - killed_at < limit_s, f"the proxy did not come back within {limit_s}s"
        time.sleep(0.1)
    return time.monotonic() - killed_at


def test_kill_9_the_http_proxy_under_load_fails_nothing(chaos_url):
    """The proxy's port closes until Serve replaces it; the client's retries ride that out."""
    with Load(chaos_url, workers=2, timeout_s=20, limit_s=90) as load:
        time.sleep(2)
        os.kill(proxy_pid(), signal.SIGKILL)
        down_s = _wait_port_back(chaos_url, time.monotonic())
        time.sleep(2)
        tally = load.stop()
    _report("kill -9 the HTTP proxy", {**tally.row(), "port_down_s": round(down_s, 1)})
    _accounted(tally)
    assert tally.succeeded > 20


# ---- scale-down under load -----------------------------------------------------------------------
def test_scale_down_under_load_drains_without_failures(chaos_url):
    with Load(chaos_url, workers=2, timeout_s=20, limit_s=90) as load:
        time.sleep(2)
        started = time.monotonic()
        smaller = _chaos_app({"image": 1, "text": 1, "audio": 1})
        update = threading.Thread(
            target=serve.run, args=(smaller,), kwargs={"name": APP, "route_prefix": "/chaos"}
        )
        update.start()
        while any(len(replica_pids(APP, d)) != 1 for d in NAMES.values()):
            assert time.monotonic() - started < 60, "scale-down did not finish"
            time.sleep(0.2)
        drained = round(time.monotonic() - started, 1)
        update.join(60)
        time.sleep(1.5)
        tally = load.stop()
    _report("scale-down 2 -> 1 replicas of each model", {**tally.row(), "scaled_down_after_s": drained})
    _accounted(tally)


# ---- deadlines and disconnects -------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_audio(ray_cluster):
    """One gateway, one audio replica whose batches (of one clip) each take 2 s."""
    vision, text = stub_models("Quick", modalities=("image", "text"))
    audio = _model("audio", 1, name="SlowAudio", delay_s=2.0, batch=1)
    serve.run(
        _gateway(vision, text, audio, name="DeadlineGateway", replicas=1, budgets={"audio": 16}),
        name="deadline",
        route_prefix="/deadline",
    )
    yield (
        f"http://127.0.0.1:{ray_cluster['port']}/deadline",
        serve.get_deployment_handle("SlowAudio", "deadline"),
    )
    serve.delete("deadline")


def _transcribe(url: str, *, timeout: float = 10, headers: dict | None = None):
    started = time.perf_counter()
    try:
        r = httpx.post(
            f"{url}/v1/audio/transcriptions",
            files={"file": ("a.wav", AUDIO)},
            data={"response_format": "json"},
            headers=headers or {},
            timeout=timeout,
        )
    except httpx.TimeoutException:
        r = None
    return r, time.perf_counter() - started


def _transcribed(handle) -> int:
    return sum(handle.batch_stats.remote().result().get("transcribe", {}).values())


def test_expired_and_abandoned_requests_stop_costing_model_time(slow_audio):
    url, handle = slow_audio
    _transcribe(url)  # warm
    before = _transcribed(handle)
    busy = threading.Thread(target=_transcribe, args=(url,))
    busy.start()  # occupies the one replica's batch loop for 2 s
    time.sleep(0.2)
    out: list = []
    deadline = [
        threading.Thread(target=lambda: out.append(_transcribe(url, headers={"X-Request-Timeout": "0.2"})))
        for _ in range(4)
    ]
    gone = [threading.Thread(target=lambda: out.append(_transcribe(url, timeout=0.3))) for _ in range(2)]
    for t in deadline + gone:
        t.start()
    for t in deadline + gone:
        t.join()
    busy.join()
    time.sleep(2.5)  # had the six run after all, at least one more batch would have finished by now
    ran = _transcribed(handle) - before
    timed = [(r, s) for r, s in out if r is not None]
    _report(
        "200 ms deadline / disconnect on a 2 s transcription",
        {
            "sent": 7,
            "deadline_504": sum(r.status_code == 504 for r, _ in timed),
            "disconnected": sum(r is None for r, _ in out),
            "batches_run": ran,
            "504_after_s": [round(s, 2) for _, s in timed],
        },
    )
    assert len(timed) == 4 and all(r.status_code == 504 for r, _ in timed)
    assert all(r.json()["error"]["type"] == "deadline_exceeded" for r, _ in timed)
    # The replica frees up ~1.8 s after these were sent and a batch takes 2 s more: a 504 before
    # 1.5 s came from the deadline, not from waiting for the model (a loaded CI machine took 0.61 s).
    assert all(0.15 < s < 1.5 for _, s in timed), timed
    assert ran == 1, f"{ran} transcription batches ran; only the request that was waited for should have"


# ---- the gateway replica dies under a request, for a client without retries ------------------------
def _first_success_after(url: str, since: float, limit_s: float = 60) -> float:
    """Seconds from ``since`` until a plain GET of the gateway answers 200 again."""
    while True:
        try:
            if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                return time.monotonic() - since
        except httpx.HTTPError:
            pass
        assert time.monotonic() - since < limit_s, f"the gateway did not answer within {limit_s}s"
        time.sleep(0.1)


def test_a_gateway_replica_dying_mid_request_answers_503_in_the_error_shape(slow_audio):
    """A plain httpx client (no retries) whose request's only gateway replica is killed while the
    request runs gets 503 + Retry-After in the error shape from Serve's proxy (through
    deployments/gateway/proxy_errors.py), not uvicorn's plain-text 500."""
    url, _ = slow_audio
    out: list = []
    call = threading.Thread(target=lambda: out.append(_transcribe(url, timeout=30)))
    call.start()
    time.sleep(0.5)  # the 2 s transcription is running in the gateway's handle call
    victim = replica_pids("deadline", "DeadlineGateway")[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    call.join()
    ((response, _),) = out
    back_s = _first_success_after(url, killed_at)
    _report(
        "gateway replica killed mid-request, plain client",
        {
            "status": response.status_code,
            "body": response.text[:200],
            "retry_after": response.headers.get("retry-after"),
            "gateway_answers_again_after_s": round(back_s, 1),
        },
    )
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1" and response.headers.get("x-request-id")
    assert response.json()["error"]["type"] == "overloaded"
    _wait_replaced("deadline", "DeadlineGateway", victim, want=1)
