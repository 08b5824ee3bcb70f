"""Traces (issue 25 #2, #5): one composed request with image, audio and text, sent with a sampled W3C
``traceparent``, reaches a real OTLP/HTTP receiver (tests/otlp_receiver.py) as one trace: the
ingress, admission and parsing, a span per compose node and per replica call, each batched call's
batch and forward pass, with the right parents and durations that agree with the answer's
``latency_ms``. The session's Ray traces at sampling 0 (tests/conftest.py), so only the requests
that ask are traced."""

import secrets

import pytest
import requests

from api.schemas import encode_media
from config.tenants import OPEN
from tests.assets import photo, speech

TASKS = [{"type": "classify"}, {"type": "embed", "modality": "text"}, {"type": "transcribe"}]
MODEL_CALLS = ("VisionEncoder classify", "TextEncoder embed", "AudioModel transcribe")


def _complete(body: dict):
    """Whether the spans hold everything the request did (exporters send them in batches)."""
    nodes = [f"compose {n['id']}" for n in body["dag"]["nodes"]]

    def done(spans) -> bool:
        names = {s.name for s in spans}
        return (
            all(n in names for n in nodes)
            and any(n.startswith("proxy_http_request") for n in names)
            # the gateway's replica span ends after the answer left, so it is exported last (CI
            # once read the trace before it arrived)
            and any(n.startswith("replica_handle_request Gateway") for n in names)
            and all(f"forward {call.replace(' ', '.')}" in names for call in MODEL_CALLS)
        )

    return done


@pytest.fixture(scope="module")
def traced(base_url, otlp_receiver):
    """One composed request, traced: its trace id, the client's span id, the answer and the spans."""
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    inputs = {
        "image": encode_media(photo("chelsea")),
        "text": "a cat",
        "audio": encode_media(speech("hello")),
    }
    r = requests.post(
        f"{base_url}/v1/compose",
        json={"inputs": inputs, "tasks": TASKS},
        headers={"traceparent": f"00-{trace_id}-{client_span}-01"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    spans = otlp_receiver.wait_for(trace_id, _complete(body))
    print(_table(spans, body))
    return {"trace_id": trace_id, "client_span": client_span, "response": r, "body": body, "spans": spans}


def _table(spans, body: dict) -> str:
    """The trace as a table (span, parent, ms), in start order; ``pytest -s`` prints it."""
    by_id = {s.span_id: s for s in spans}
    lines = [f"compose latency_ms {body['latency_ms']}", "| span | parent | ms |", "|---|---|---|"]
    for s in sorted(spans, key=lambda s: s.start_ns):
        parent = by_id[s.parent_id].name if s.parent_id in by_id else f"(client {s.parent_id})"
        lines.append(f"| {s.name} | {parent} | {s.duration_ms:.1f} |")
    return "\n".join(lines)


def _by_name(spans, prefix: str) -> list:
    return [s for s in spans if s.name.startswith(prefix)]


def _one(spans, prefix: str):
    found = _by_name(spans, prefix)
    assert len(found) == 1, (prefix, [s.name for s in spans])
    return found[0]


def test_one_trace_rooted_at_the_clients_span(traced):
    spans, ids = traced["spans"], {s.span_id for s in traced["spans"]}
    assert spans, "no span of the request's trace reached the receiver"
    roots = [s for s in spans if s.parent_id not in ids]
    assert [(s.name.split()[0], s.parent_id) for s in roots] == [
        ("proxy_http_request", traced["client_span"])
    ]
    assert traced["response"].headers["traceparent"].split("-")[1] == traced["trace_id"]


def test_the_gateway_spans_sit_under_its_replica_span(traced):
    spans = traced["spans"]
    by_id = {s.span_id: s for s in spans}
    gateway = _one(spans, "replica_handle_request Gateway")
    assert by_id[by_id[gateway.parent_id].parent_id].name.startswith("proxy_http_request")
    for name in ("admission", "parse"):
        assert _one(spans, name).parent_id == gateway.span_id, name
    assert _one(spans, "admission").attributes["tenant.id"] == OPEN.id  # the session graph is open
    nodes = {s.name.removeprefix("compose "): s for s in _by_name(spans, "compose ")}
    assert set(nodes) == {n["id"] for n in traced["body"]["dag"]["nodes"]}
    assert all(s.parent_id == gateway.span_id for s in nodes.values())


def test_each_model_call_has_its_replica_span_batch_and_forward(traced):
    spans = traced["spans"]
    by_id = {s.span_id: s for s in spans}
    for call in MODEL_CALLS:
        replica = _one(spans, f"replica_handle_request {call}")
        routed = by_id[replica.parent_id]
        assert routed.name == f"route_to_replica {call}"
        sent = by_id[routed.parent_id]
        assert sent.name == f"call {call.replace(' ', '.')}"
        assert by_id[sent.parent_id].name.startswith("compose ")
        batch = _one(spans, f"batch {call.replace(' ', '.')}")
        assert batch.parent_id == replica.span_id
        assert batch.attributes["batch.size"] >= 1 and batch.attributes["batch.wait_ms"] >= 0
        forward = _one(spans, f"forward {call.replace(' ', '.')}")
        assert forward.parent_id == batch.span_id
        assert replica.start_ns <= batch.start_ns <= forward.start_ns <= forward.end_ns <= replica.end_ns


def test_span_durations_agree_with_the_answers_latency(traced):
    """Each node's span and the node's ``latency_ms`` time the same step (the span inside the timing);
    the gateway's span holds the whole DAG (``latency_ms`` of the answer)."""
    spans, body = traced["spans"], traced["body"]
    for node in body["dag"]["nodes"]:
        span = _one(spans, f"compose {node['id']}")
        assert span.duration_ms <= node["latency_ms"] + 1.0, node
        assert span.duration_ms >= node["latency_ms"] - max(20.0, 0.1 * node["latency_ms"]), node
    gateway = _one(spans, "replica_handle_request Gateway")
    assert gateway.duration_ms >= body["latency_ms"]
    slowest = max(_by_name(spans, "compose "), key=lambda s: s.end_ns)
    assert slowest.end_ns <= gateway.end_ns


def test_an_untraced_request_gets_no_traceparent(base_url):
    """At sampling 0 a request without a sampled ``traceparent`` is not traced, and says nothing."""
    r = requests.get(f"{base_url}/v1/models", timeout=30)
    assert r.status_code == 200 and "traceparent" not in r.headers
