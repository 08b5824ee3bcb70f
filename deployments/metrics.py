"""Prometheus metrics through Ray Serve's metrics API (exported by Ray's metrics agent).

Every metric is declared once in ``METRICS`` (name, kind, labels, help); dashboards and alert
rules in ``configs/observability/`` are checked against that table. Names follow Prometheus'
conventions (base units: ``_seconds``; counters end in ``_total``). On the scrape endpoint Ray adds
the ``ray_`` prefix, and in a replica Serve adds ``deployment``, ``replica`` and ``application``.
Labels are bounded: routes, modalities, deployments, methods, reasons and tenants (a configured
list; ``gateway.settings.metrics_tenant_label: false`` folds them into one value, ``all``); never a
request id, a key or an input.

Stages of a model call, in the order a request meets them:

- ``mmserve_queue_wait_seconds`` (gateway): from the gateway's handle call until Serve's router
  handed it to a replica (the replica starts it at once: an async replica runs up to
  ``max_ongoing_requests`` calls side by side, so the wait is the router's queue);
- ``mmserve_decode_seconds`` (replica): an upload decoded in the replica (``image_transport: bytes``);
- ``mmserve_batch_wait_seconds`` (replica): from a call entering a ``@serve.batch`` method until its
  batch's forward pass started;
- ``mmserve_batch_size`` and ``mmserve_forward_seconds`` (replica): each batch's size and forward pass;
- ``mmserve_request_duration_seconds`` (gateway): end to end, as the gateway answered it.

Metric objects are created lazily inside the process that records them.
"""

from __future__ import annotations

import collections
import functools
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]

PREFIX = "ray_"  # what Ray's metrics agent puts before every name
SERVE_LABELS = ("deployment", "replica", "application")  # what Serve adds in a replica

# The modality each model deployment serves (its ``deployment`` label says which deployment).
DEPLOYMENT_MODALITY = {
    "VisionEncoder": "image",
    "TextEncoder": "text",
    "AudioModel": "audio",
    "VisionLanguage": "image_text",
    "FusionHead": "fusion",
    "SearchIndex": "search",
    "QuotaKeeper": "quota",
}

# Why a request was refused (``mmserve_refusals_total{reason}``).
REFUSAL_REASONS = ("budget", "queue_full", "deadline", "tenant_rate", "tenant_concurrency", "auth")


@dataclass(frozen=True)
class Metric:
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str
    boundaries: tuple[float, ...] = ()


_GATEWAY = ("route", "modality", "tenant")
METRICS: dict[str, Metric] = {
    "mmserve_requests_total": Metric("counter", _GATEWAY + ("status",), "HTTP requests answered"),
    "mmserve_errors_total": Metric("counter", _GATEWAY + ("status",), "HTTP requests answered with 4xx/5xx"),
    "mmserve_request_duration_seconds": Metric(
        "histogram", _GATEWAY, "end to end: the gateway's time per request", tuple(SECONDS)
    ),
    "mmserve_inflight_requests": Metric("gauge", ("modality",), "admitted requests in flight per modality"),
    "mmserve_refusals_total": Metric(
        "counter",
        ("reason", "modality", "tenant"),
        "requests refused, by reason: " + ", ".join(REFUSAL_REASONS),
    ),
    "mmserve_queue_wait_seconds": Metric(
        "histogram",
        ("target", "method", "modality"),
        "from the gateway's handle call until Serve's router handed it to a replica of target",
        tuple(SECONDS),
    ),
    "mmserve_decode_seconds": Metric(
        "histogram", ("modality",), "an upload decoded in the model replica", tuple(SECONDS)
    ),
    "mmserve_batch_wait_seconds": Metric(
        "histogram",
        ("method", "modality"),
        "from a call entering a @serve.batch method until its batch's forward pass started",
        tuple(SECONDS),
    ),
    "mmserve_batch_size": Metric(
        "histogram", ("method", "modality"), "items per model forward pass", tuple(BATCH_SIZES)
    ),
    "mmserve_forward_seconds": Metric(
        "histogram", ("method", "modality"), "one batch's model forward pass", tuple(SECONDS)
    ),
    "mmserve_embed_cache_total": Metric(
        "counter", ("modality", "result"), "embedding cache look-ups (result: hit, miss)"
    ),
    "mmserve_model_loads_total": Metric(
        "counter", ("kind", "outcome"), "model loads (outcome: loaded, failed), at start, swap or multiplex"
    ),
    "mmserve_poison_total": Metric(
        "counter",
        ("method", "outcome"),
        "inputs in flight when a model replica died: suspect (retried), held (422 poison_request) "
        "or refused (held, not sent)",
    ),
}

# Ray Serve's own metrics the dashboard and alerts use (exported names, prefix included).
SERVE_METRICS = (
    "ray_serve_deployment_replica_healthy",
    "ray_serve_deployment_replica_starts_total",
)


def exported_names() -> set[str]:
    """Every series name the scrape endpoint can show for ``METRICS`` (histograms as their three)."""
    names: set[str] = set()
    for name, metric in METRICS.items():
        full = PREFIX + name
        suffixes = ("_bucket", "_sum", "_count") if metric.kind == "histogram" else ("",)
        names |= {full + suffix for suffix in suffixes}
    return names | set(SERVE_METRICS)


@functools.cache
def _metric(name: str):
    from ray.serve import metrics

    spec = METRICS[name]
    if spec.kind == "counter":
        return metrics.Counter(name, spec.help, tag_keys=spec.labels)
    if spec.kind == "gauge":
        return metrics.Gauge(name, spec.help, tag_keys=spec.labels)
    return metrics.Histogram(name, spec.help, boundaries=list(spec.boundaries), tag_keys=spec.labels)


_TENANT_LABEL = [True]


def configure(*, tenant_label: bool) -> None:
    """Whether gateway metrics carry each tenant's id (``gateway.settings.metrics_tenant_label``)."""
    _TENANT_LABEL[0] = tenant_label


def _tenant(tenant: str) -> str:
    return tenant if _TENANT_LABEL[0] else "all"


def modality_of(deployment: str) -> str:
    return DEPLOYMENT_MODALITY.get(deployment, "other")


# --- gateway ---------------------------------------------------------------------------------


def observe_request(route: str, modality: str, status: int, latency_s: float, *, tenant: str) -> None:
    tags = {"route": route, "modality": modality, "tenant": _tenant(tenant)}
    _metric("mmserve_requests_total").inc(1, tags={**tags, "status": str(status)})
    if status >= 400:
        _metric("mmserve_errors_total").inc(1, tags={**tags, "status": str(status)})
    _metric("mmserve_request_duration_seconds").observe(latency_s, tags=tags)


def observe_inflight(modality: str, count: int) -> None:
    _metric("mmserve_inflight_requests").set(count, tags={"modality": modality})


def refusal_reason(exc: BaseException) -> str | None:
    """Which of ``REFUSAL_REASONS`` an error is, or None when it is not a refusal."""
    from ray.serve.exceptions import BackPressureError

    from models.errors import DeadlineExceeded, Forbidden, Overloaded, Throttled, Unauthorized

    for err in (exc, getattr(exc, "cause", None), exc.__cause__):
        if isinstance(err, BackPressureError):
            return "queue_full"
        if isinstance(err, Throttled):
            return err.reason
        if isinstance(err, (Unauthorized, Forbidden)):
            return "auth"
        if isinstance(err, DeadlineExceeded):
            return "deadline"
        if isinstance(err, Overloaded) and err is exc:  # raised by a budget, not mapped from Serve's
            return "budget"
    return None


def observe_refusal(exc: BaseException, modality: str, tenant: str) -> None:
    reason = refusal_reason(exc)
    if reason is not None:
        tags = {"reason": reason, "modality": modality, "tenant": _tenant(tenant)}
        _metric("mmserve_refusals_total").inc(1, tags=tags)


def handle_names(method) -> tuple[str, str]:
    """The deployment and the method a handle method calls, as strings ("?" when unknown). A real
    handle keeps the method in its options: its ``method_name`` attribute would be a new handle (a
    DeploymentHandle answers any unknown attribute with one); the tests' fakes name it directly."""
    target = getattr(method, "deployment_name", None)
    name = getattr(getattr(method, "handle_options", None), "method_name", None)
    if not isinstance(name, str):
        name = getattr(method, "method_name", None)
    return (target if isinstance(target, str) else "?", name if isinstance(name, str) else "?")


def call_labels(method) -> dict[str, str]:
    """``target``, ``method`` and ``modality`` of a handle call, all strings (Ray refuses other tag
    values)."""
    target, name = handle_names(method)
    return {"target": target, "method": name, "modality": modality_of(target)}


class Assignment:
    """When Serve's router assigned a handle call to a replica (``perf_counter``; None until then)."""

    at: float | None = None


def watch_queue_wait(method, response, sent: float) -> Assignment:
    """Time a handle call (``method.remote`` gave ``response``; ``sent``: its ``perf_counter`` just
    before) until Serve's router assigned it to a replica: the router resolves the response's replica
    future then, on its own loop. The returned ``Assignment`` gets the time too (compose reports the
    same interval per node: gateway/call_times.py)."""
    assignment = Assignment()
    future = getattr(response, "_replica_result_future", None)
    if future is None:  # Serve changed its handle internals: no queue wait rather than an error
        return assignment
    tags = call_labels(method)

    def assigned(done) -> None:
        if not done.cancelled() and done.exception() is None:
            assignment.at = time.perf_counter()
            _metric("mmserve_queue_wait_seconds").observe(assignment.at - sent, tags=tags)

    future.add_done_callback(assigned)
    return assignment


def observe_cache(modality: str, hit: bool) -> None:
    _metric("mmserve_embed_cache_total").inc(
        1, tags={"modality": modality, "result": "hit" if hit else "miss"}
    )


def observe_poison(method: str, outcome: str) -> None:
    _metric("mmserve_poison_total").inc(1, tags={"method": method, "outcome": outcome})


# --- model replicas --------------------------------------------------------------------------


@functools.cache
def _replica_modality() -> str:
    from ray import serve

    try:
        return modality_of(serve.get_replica_context().deployment)
    except Exception:  # noqa: BLE001 - outside a replica (unit tests): no deployment
        return "other"


def observe_model_load(kind: str, *, failed: bool = False) -> None:
    _metric("mmserve_model_loads_total").inc(
        1, tags={"kind": kind, "outcome": "failed" if failed else "loaded"}
    )


def timed_decode(decode: Callable[..., Any]) -> Callable[..., Any]:
    """``decode`` (run in a worker thread) that records its time as this replica's decode stage."""

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return decode(*args, **kwargs)
        finally:
            _metric("mmserve_decode_seconds").observe(
                time.perf_counter() - started, tags={"modality": _replica_modality()}
            )

    return timed


class BatchArrivals:
    """When each call entered a ``@serve.batch`` method, by its request's internal id (Serve's
    batch context names the requests a batch holds, in the batch's task). Bounded: calls cancelled
    before their batch ran are forgotten, oldest first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._times: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self._lock = threading.Lock()

    def arrived(self, key: str, now: float) -> None:
        with self._lock:
            self._times.setdefault(key, collections.deque()).append(now)
            self._times.move_to_end(key)
            while len(self._times) > self.capacity:
                self._times.popitem(last=False)

    def waited(self, keys: list[str], now: float) -> list[float]:
        """Each call's wait until ``now`` (the batch's start), forgetting those calls."""
        waits = []
        with self._lock:
            for key in keys:
                times = self._times.get(key)
                if times:
                    waits.append(now - times.popleft())
                    if not times:
                        del self._times[key]
        return waits


ARRIVALS = BatchArrivals()


def _request_key(context) -> str:
    return context._internal_request_id or context.request_id


def timed_batch(batched: Callable[..., Any]) -> Callable[..., Any]:
    """A ``@serve.batch`` method that notes when each call entered it (for its batch wait).
    ``functools.wraps`` keeps Serve's ``set_max_batch_size`` and ``set_batch_wait_timeout_s``."""
    if not inspect.iscoroutinefunction(batched):
        return batched

    @functools.wraps(batched)
    async def entered(self, *args, **kwargs):
        _entered_batch()  # a module function: the class is pickled with this closure, not ARRIVALS
        return await batched(self, *args, **kwargs)

    # Serve finds a batched method's ``self`` by comparing ``getattr(self, name).__wrapped__`` with
    # the undecorated function (``extract_self_if_method_call``): keep that one, not ``batched``.
    entered.__wrapped__ = getattr(batched, "__wrapped__", batched)  # type: ignore[attr-defined]
    return entered


def _entered_batch() -> None:
    from ray import serve

    ARRIVALS.arrived(_request_key(serve.context._get_serve_request_context()), time.perf_counter())


def batch_started(method: str) -> float:
    """Record the batch wait of every call in the batch starting now (Serve's batch context)."""
    from ray import serve

    now = time.perf_counter()
    keys = [_request_key(ctx) for ctx in serve.context._get_serve_batch_request_context()]
    tags = {"method": method, "modality": _replica_modality()}
    for wait in ARRIVALS.waited(keys, now):
        _metric("mmserve_batch_wait_seconds").observe(wait, tags=tags)
    return now


def observe_batch(method: str, size: int, started: float) -> None:
    """One batch's size and forward time (``started``: what ``batch_started`` returned)."""
    tags = {"method": method, "modality": _replica_modality()}
    _metric("mmserve_batch_size").observe(size, tags=tags)
    _metric("mmserve_forward_seconds").observe(time.perf_counter() - started, tags=tags)
