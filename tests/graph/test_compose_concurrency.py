"""Compose through real Ray with slowed backends: independent branches overlap, dependent ones chain."""

import time

import httpx
import pytest
from ray import serve

from api.schemas import encode_media
from deployments.gateway.ingress import Gateway
from tests.assets import photo, speech
from tests.stub_backends import stub_models

DELAY = 1.0


@pytest.fixture(scope="module")
def slow_url(ray_cluster):
    vision, text, audio = stub_models("Slow", delay_s=DELAY)
    app = Gateway.options(name="SlowGateway", ray_actor_options={"num_cpus": 0}).bind(
        vision, text, audio, {"embed_cache_size": 0}
    )
    serve.run(app, name="slow", route_prefix="/slow")
    yield f"http://127.0.0.1:{ray_cluster['port']}/slow"
    serve.delete("slow")


def _compose(url: str, tasks: list[dict], **inputs) -> tuple[dict, float]:
    started = time.perf_counter()
    r = httpx.post(f"{url}/v1/compose", json={"inputs": inputs, "tasks": tasks}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json(), time.perf_counter() - started


def test_independent_branches_take_the_slowest_branch_not_the_sum(slow_url):
    inputs = {
        "image": encode_media(photo("chelsea")),
        "text": "a cat",
        "audio": encode_media(speech("hello")),
    }
    tasks = [{"type": "classify"}, {"type": "embed", "modality": "text"}, {"type": "transcribe"}]
    _compose(slow_url, tasks, **inputs)  # warm the handles
    body, wall = _compose(slow_url, tasks, **inputs)
    nodes = {n["id"]: n for n in body["dag"]["nodes"]}
    branches = [nodes[i] for i in ("classify:classify", "embed:text", "speech:transcribe:auto")]
    assert all(b["latency_ms"] >= DELAY * 1000 * 0.95 for b in branches)
    serial = sum(b["latency_ms"] for b in branches)
    assert body["latency_ms"] < 0.6 * serial, (body["latency_ms"], serial)
    assert wall < 2 * DELAY  # the client saw about one delay, not three
    assert set(body["results"]) == {"classify", "embed", "transcribe"}
    assert body["results"]["transcribe"]["text"] == "slow words"


def test_dependent_nodes_run_after_their_inputs(slow_url):
    tasks = [{"type": "zero_shot", "labels": ["cat", "dog"]}]
    body, _ = _compose(slow_url, tasks, image=encode_media(photo("chelsea")))
    nodes = {n["id"]: n for n in body["dag"]["nodes"]}
    label, image, zs = nodes["labels:zero_shot"], nodes["embed:image"], nodes["zero_shot:zero_shot"]
    # label prompts and the image embed side by side; zero-shot scores after both
    assert abs(label["started_ms"] - image["started_ms"]) < 0.5 * DELAY * 1000
    assert zs["started_ms"] >= image["started_ms"] + image["latency_ms"] - 1
    assert ["embed:image", "zero_shot:zero_shot"] in body["dag"]["edges"]
    assert body["latency_ms"] < 1.6 * DELAY * 1000
