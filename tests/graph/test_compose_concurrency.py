"""Compose through real Ray with slowed backends: independent branches overlap, dependent ones chain."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from ray import serve

from api.schemas import encode_media
from clients.client import server_sent_events
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


def test_each_node_reports_its_calls_queue_and_replica_time(slow_url):
    """The stub sleeps DELAY in its replica: that is replica time, not queue time; a decode node (in the
    gateway) made no model call and reports neither."""
    tasks = [{"type": "classify"}, {"type": "embed", "modality": "text"}]
    _compose(
        slow_url, tasks, image=encode_media(photo("chelsea")), text="warm"
    )  # the labels' info call, once
    body, _ = _compose(slow_url, tasks, image=encode_media(photo("chelsea")), text="a cat")
    nodes = {n["id"]: n for n in body["dag"]["nodes"]}
    for node in (nodes["classify:classify"], nodes["embed:text"]):
        assert node["replica_ms"] >= DELAY * 1000 * 0.95 and node["queue_ms"] < 0.3 * DELAY * 1000, node
        assert node["queue_ms"] + node["replica_ms"] <= node["latency_ms"] + 1, node
    assert (nodes["decode:image"]["queue_ms"], nodes["decode:image"]["replica_ms"]) == (None, None)


@pytest.fixture(scope="module")
def one_at_a_time_url(ray_cluster):
    """A text model that takes one call at a time: a second call waits in Serve's queue."""
    (text,) = stub_models("Queued", delay_s=DELAY, modalities=("text",), max_ongoing_requests=1)
    vision, audio = stub_models("Queued", modalities=("image", "audio"))
    app = Gateway.options(name="QueuedGateway", ray_actor_options={"num_cpus": 0}).bind(
        vision, text, audio, {"embed_cache_size": 0}
    )
    serve.run(app, name="queued", route_prefix="/queued")
    yield f"http://127.0.0.1:{ray_cluster['port']}/queued"
    serve.delete("queued")


def test_a_call_that_waited_for_a_busy_replica_reports_queue_time(one_at_a_time_url):
    tasks = [{"type": "embed", "modality": "text"}]
    _compose(one_at_a_time_url, tasks, text="warm")
    with ThreadPoolExecutor(2) as pool:
        bodies = list(pool.map(lambda t: _compose(one_at_a_time_url, tasks, text=t)[0], ["a cat", "a dog"]))
    nodes = sorted((b["dag"]["nodes"][0] for b in bodies), key=lambda n: n["queue_ms"])
    assert nodes[0]["queue_ms"] < 0.3 * DELAY * 1000, nodes  # the first went straight to the replica
    assert nodes[1]["queue_ms"] >= 0.7 * DELAY * 1000, nodes  # the second waited for it
    assert all(n["replica_ms"] >= 0.95 * DELAY * 1000 for n in nodes), nodes


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


def _stream(url: str, tasks: list[dict], headers: dict | None = None, **inputs):
    """``(seconds since sent, event, data)`` for each server-sent event of a streamed compose."""
    started = time.perf_counter()
    body = {"inputs": inputs, "tasks": tasks, "stream": True}
    with httpx.stream("POST", f"{url}/v1/compose", json=body, headers=headers or {}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for event, data in server_sent_events(r.iter_lines()):
            yield time.perf_counter() - started, event, data


def test_a_streamed_compose_sends_each_node_as_it_finishes_then_the_whole_response(slow_url):
    inputs = {
        "image": encode_media(photo("chelsea")),
        "text": "a cat",
        "audio": encode_media(speech("hello")),
    }
    tasks = [{"type": "classify"}, {"type": "embed", "modality": "text"}, {"type": "transcribe"}]
    events = list(_stream(slow_url, tasks, **inputs))
    nodes = [(at, json.loads(data)) for at, event, data in events if event == "node"]
    ((done_at, _, final),) = [e for e in events if e[1] == "response"]
    final = json.loads(final)
    print(f"\nSTREAM first node event after {nodes[0][0]:.3f} s, whole response after {done_at:.3f} s")
    assert [e for _, e, _ in events][-1] == "response" and len(nodes) == len(final["dag"]["nodes"]) == 5
    assert nodes[0][0] < 0.5 * DELAY < DELAY < done_at  # the decodes arrive long before the models answer
    by_id = {n["id"]: n for _, n in nodes}
    assert by_id["classify:classify"]["results"]["classify"]["predictions"][0]["label"] == "slow"
    assert by_id["speech:transcribe:auto"]["results"]["transcribe"]["text"] == "slow words"
    assert by_id["decode:image"]["results"] == {} and by_id["classify:classify"]["deps"] == ["decode:image"]
    assert set(final["results"]) == {"classify", "embed", "transcribe"}
    assert final["results"]["classify"] == by_id["classify:classify"]["results"]["classify"]


def test_a_failure_after_the_stream_started_is_its_last_event_in_the_error_shape(slow_url):
    tasks = [{"type": "embed", "modality": "text"}]
    headers = {"X-Request-Timeout": "0.3", "X-Request-ID": "stream-deadline-1"}
    events = list(_stream(slow_url, tasks, headers=headers, text="a cat"))
    ((at, event, data),) = events
    assert event == "error" and at < DELAY, events
    error = json.loads(data)
    assert error == {
        "error": {
            "type": "deadline_exceeded",
            "message": error["error"]["message"],
            "param": None,
            "request_id": "stream-deadline-1",
        },
        "status": 504,
    }


def test_leaving_a_stream_cancels_the_nodes_still_running(slow_url):
    text = serve.get_deployment_handle("SlowText", "slow")
    before = text.finished_embeds.remote().result()
    tasks = [{"type": "embed", "modality": "text"}, {"type": "transcribe"}]
    stream = _stream(slow_url, tasks, text="a cat", audio=encode_media(speech("hello")))
    at, event, data = next(stream)  # decode:audio, while the 1 s text embedding runs
    assert event == "node" and json.loads(data)["id"] == "decode:audio" and at < 0.5 * DELAY
    stream.close()  # the client goes away
    time.sleep(2 * DELAY)
    assert text.finished_embeds.remote().result() == before, "the text embedding ran on after the client left"
