"""Traces: one request is one OpenTelemetry trace, across the proxy, the gateway and every replica.

Ray Serve 2.60 does the carrying (``ray/serve/_private/tracing_utils.py``): with the Serve
config's ``tracing_config`` enabled, every Serve process (proxy, each replica) installs a tracer
provider with the span processors of ``exporter_import_path`` and a parent-based ratio sampler; the
proxy continues a client's W3C ``traceparent`` (``proxy_http_request``), each handle call is a
``route_to_replica`` span whose context travels in the request's metadata, and the replica that
runs it opens ``replica_handle_request <Deployment> <method>`` under it. This module adds what
Serve does not know:

- ``span(name, **attributes)``: a child of the current span (admission, parsing, each compose node,
  each handle call the gateway makes). When tracing is off it is one boolean test: no SDK work.
- ``record_batch``: Serve's ``@serve.batch`` parents the batch only in its *first* request's trace.
  Each request of a batch gets, under its own replica span, ``batch <method>`` (from its arrival at
  the replica to the end of the batch: ``batch.size``, ``batch.wait_ms``, the time it waited for
  the batch to start) and its child ``forward <method>`` (the model's forward pass).
- ``otlp_http``: the exporter Serve's ``exporter_import_path`` names: OTLP/protobuf over HTTP to
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (default ``http://localhost:4318/v1/traces``), batched.

Tenant ids go on spans as ``tenant.id`` only; keys never do.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from ray.serve._private import tracing_utils

REPLICA_SPAN = "replica_handle_request"
TRACER = "mmserve"


def enabled() -> bool:
    """Whether this process exports traces (Serve set up its tracer provider here)."""
    return tracing_utils.is_tracing_enabled()


def _tracer():
    from opentelemetry import trace

    return trace.get_tracer(TRACER)


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span named ``name`` under the current one, for the block; ``None`` when tracing is off.
    An exception leaving the block marks the span as failed (and is re-raised)."""
    if not enabled():
        yield None
        return
    kept = {key.replace("_", "."): value for key, value in attributes.items() if value is not None}
    with _tracer().start_as_current_span(name, attributes=kept) as current:
        yield current


def set_attributes(**attributes: Any) -> None:
    """Attributes on the current span (when tracing is on and it records)."""
    if not enabled():
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(
            {key.replace("_", "."): value for key, value in attributes.items() if value is not None}
        )


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, if it is sampled (for a response header)."""
    if not enabled():
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


def answer_header(message: dict) -> None:
    """Adds ``traceparent`` (the current span's) to an ASGI ``http.response.start`` message, so a
    caller can find its trace; nothing when tracing is off or the request is not sampled."""
    value = traceparent()
    if value is not None:
        message["headers"] = [*message.get("headers", []), (b"traceparent", value.encode())]


# ---- batches --------------------------------------------------------------------------------------
class ReplicaSpans(SpanProcessor):
    """A span processor that keeps this process's open ``replica_handle_request`` spans by their
    parent's span id (the caller's ``route_to_replica``, whose id a request's trace carrier names),
    so a batch can find the replica span of each request it holds."""

    def __init__(self) -> None:
        self._open: dict[int, Any] = {}

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.name.startswith(REPLICA_SPAN) and span.parent is not None:
            self._open[span.parent.span_id] = span

    def on_end(self, span: Any) -> None:
        """``span`` is the SDK's read-only copy of the span that ended: matched by its span id."""
        if span.parent is None:
            return
        held = self._open.get(span.parent.span_id)
        if held is not None and held.get_span_context().span_id == span.context.span_id:
            del self._open[span.parent.span_id]

    def find(self, carrier: dict | None) -> Any:
        """The open replica span under the span a request's trace carrier (``traceparent``) names."""
        parts = (carrier or {}).get("traceparent", "").split("-")
        if len(parts) != 4:
            return None
        try:
            return self._open.get(int(parts[2], 16))
        except ValueError:
            return None

    def shutdown(self) -> None:
        self._open.clear()


REPLICA_SPANS = ReplicaSpans()


def now_ns() -> int:
    """The clock spans are stamped with (wall time, ns)."""
    return time.time_ns()


def record_batch(method: str, *, size: int, started_ns: int, ended_ns: int) -> None:
    """Called once a ``@serve.batch`` forward pass ran (in the batch's task): for each request of the
    batch, ``batch <method>`` under its replica span and ``forward <method>`` under that."""
    if not enabled():
        return
    from opentelemetry import trace
    from ray import serve

    tracer = _tracer()
    for request in serve.context._get_serve_batch_request_context():
        replica = REPLICA_SPANS.find(request._ray_trace_ctx)
        if replica is None or not replica.is_recording():
            continue
        arrived = min(replica.start_time, started_ns)
        batch = tracer.start_span(
            f"batch {method}",
            context=trace.set_span_in_context(replica),
            start_time=arrived,
            attributes={"batch.size": size, "batch.wait_ms": (started_ns - arrived) / 1e6},
        )
        forward = tracer.start_span(
            f"forward {method}", context=trace.set_span_in_context(batch), start_time=started_ns
        )
        forward.end(end_time=ended_ns)
        batch.end(end_time=ended_ns)


# ---- exporters (Serve's ``tracing_config.exporter_import_path``) ----------------------------------
def otlp_http() -> list:
    """Span processors for Serve: OTLP/protobuf over HTTP, batched off the request path, and the
    replica-span index ``record_batch`` needs. The endpoint and headers come from OpenTelemetry's
    own variables (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_BSP_SCHEDULE_DELAY``...)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return [REPLICA_SPANS, BatchSpanProcessor(OTLPSpanExporter())]
