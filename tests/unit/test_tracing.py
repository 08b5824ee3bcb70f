"""Traces without Ray (issue 25 #2): the config and what the launcher makes of it, the spans
``deployments.tracing`` opens (none when off), and each batched request's batch and forward spans
under its own replica span. tests/http/test_traces.py follows one request through the real graph."""

from __future__ import annotations

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError
from ray.serve._private import tracing_utils

from config.tracing import ENDPOINT_ENV, EXPORTER_ENV, OTLP_HTTP, SAMPLING_ENV, TracingConfig, with_tracing
from deployments import tracing
from graphs import launch


# ---- config -----------------------------------------------------------------------------------------
def test_off_by_default_and_then_no_variables():
    env = {"env_vars": {"A": "1"}}
    assert not TracingConfig().enabled
    assert with_tracing(env, TracingConfig()) is env


def test_on_every_serve_process_gets_serves_variables_and_the_files_own_win():
    env = {"working_dir": ".", "env_vars": {ENDPOINT_ENV: "http://127.0.0.1:4318/v1/traces"}}
    traced = with_tracing(env, TracingConfig(enabled=True, sampling_ratio=0.5))
    assert traced["env_vars"] == {
        EXPORTER_ENV: OTLP_HTTP,
        SAMPLING_ENV: "0.5",
        ENDPOINT_ENV: "http://127.0.0.1:4318/v1/traces",
    }
    assert traced["working_dir"] == "." and env["env_vars"] == {
        ENDPOINT_ENV: "http://127.0.0.1:4318/v1/traces"
    }
    mine = with_tracing({"env_vars": {SAMPLING_ENV: "0.2"}}, TracingConfig(enabled=True))
    assert mine["env_vars"][SAMPLING_ENV] == "0.2"


def test_the_launcher_puts_the_files_tracing_config_in_the_jobs_environment():
    raw = yaml.safe_load(open("serve_config.yaml"))
    assert launch.job_runtime_env(raw) is None  # off: nothing added
    raw["tracing_config"] = {"enabled": True, "sampling_ratio": 1.0}
    assert launch.job_runtime_env(raw)["env_vars"] == {EXPORTER_ENV: OTLP_HTTP, SAMPLING_ENV: "1.0"}


def test_a_bad_tracing_config_is_refused_before_ray_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(launch.local_ray, "start", lambda **_: pytest.fail("Ray started"))
    raw = yaml.safe_load(open("serve_config.yaml"))
    raw["tracing_config"] = {"enabled": True, "sampling_ratio": 2}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert launch.main([str(path)]) == launch.EXIT_UNSUPPORTED
    assert "sampling_ratio" in capsys.readouterr().err
    with pytest.raises(ValidationError):
        TracingConfig(endpoint="http://x")  # Serve's keys only: `serve deploy` reads the same block


# ---- spans --------------------------------------------------------------------------------------------
@pytest.fixture
def spans(monkeypatch):
    """Tracing on in this process, as Serve sets it up (its flag), with spans kept in memory."""
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(tracing.REPLICA_SPANS)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing_utils, "_tracing_enabled", True)
    monkeypatch.setattr(tracing, "_tracer", lambda: provider.get_tracer("test"))
    yield exporter
    tracing.REPLICA_SPANS.shutdown()


def test_off_no_span_and_no_sdk_work(monkeypatch):
    monkeypatch.setattr(tracing_utils, "_tracing_enabled", False)
    monkeypatch.setattr(tracing, "_tracer", lambda: pytest.fail("the SDK was called with tracing off"))
    with tracing.span("admission", tenant_id="t") as current:
        assert current is None
    message = {"type": "http.response.start", "headers": []}
    tracing.answer_header(message)
    tracing.record_batch("X.embed", size=2, started_ns=1, ended_ns=2)
    assert message["headers"] == [] and tracing.traceparent() is None


def test_a_span_nests_names_its_attributes_and_answers_its_traceparent(spans):
    with tracing.span("admission", tenant_id="acme", modality=None) as outer:
        with tracing.span("parse"):
            message = {"type": "http.response.start", "headers": [(b"x", b"1")]}
            tracing.answer_header(message)
    parse, admission = spans.get_finished_spans()
    assert admission.attributes == {"tenant.id": "acme"}  # dotted, and None left out
    assert parse.parent.span_id == outer.get_span_context().span_id
    header = dict(message["headers"])[b"traceparent"].decode()
    assert header == f"00-{parse.context.trace_id:032x}-{parse.context.span_id:016x}-01"


class _Request:
    def __init__(self, carrier):
        self._ray_trace_ctx = carrier


def _carrier(span) -> dict:
    ctx = span.get_span_context()
    return {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"}


def test_each_request_of_a_batch_gets_its_batch_and_forward_under_its_own_replica_span(spans, monkeypatch):
    from ray import serve

    tracer = tracing._tracer()
    callers = [tracer.start_span(f"route_to_replica caller {i}") for i in range(2)]
    replicas = [
        tracer.start_span("replica_handle_request TextEncoder embed", context=trace.set_span_in_context(c))
        for c in callers
    ]
    stranger = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}  # a request whose replica span is not here
    requests = [_Request(_carrier(c)) for c in callers] + [_Request(stranger), _Request(None)]
    monkeypatch.setattr(serve.context, "_get_serve_batch_request_context", lambda: requests)
    started = max(r.start_time for r in replicas) + 1_000_000
    tracing.record_batch("TextEncoder.embed", size=4, started_ns=started, ended_ns=started + 5_000_000)
    for span in replicas + callers:
        span.end()
    finished = spans.get_finished_spans()
    batches = [s for s in finished if s.name == "batch TextEncoder.embed"]
    forwards = [s for s in finished if s.name == "forward TextEncoder.embed"]
    assert len(batches) == len(forwards) == 2
    for replica in replicas:
        (batch,) = [b for b in batches if b.parent.span_id == replica.get_span_context().span_id]
        (forward,) = [f for f in forwards if f.parent.span_id == batch.context.span_id]
        assert batch.start_time == replica.start_time and batch.attributes["batch.size"] == 4
        assert batch.attributes["batch.wait_ms"] == (started - replica.start_time) / 1e6
        assert (forward.start_time, forward.end_time) == (started, started + 5_000_000)
    assert tracing.REPLICA_SPANS.find(_carrier(callers[0])) is None  # forgotten once ended


def test_the_test_receiver_decodes_what_the_real_otlp_exporter_sends():
    """tests/otlp_receiver.py against OpenTelemetry's own OTLP/HTTP exporter (what the replicas use)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from tests.otlp_receiver import Receiver

    with Receiver() as receiver:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint)))
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("outer", attributes={"batch.size": 3}) as outer:
            with tracer.start_as_current_span("inner"):
                pass
        provider.shutdown()
    inner, outer_span = receiver.spans
    assert (inner.name, outer_span.name) == ("inner", "outer")
    assert inner.parent_id == outer_span.span_id == f"{outer.get_span_context().span_id:016x}"
    assert inner.trace_id == outer_span.trace_id and outer_span.attributes == {"batch.size": 3}
    assert outer_span.start_ns <= inner.start_ns <= inner.end_ns <= outer_span.end_ns
