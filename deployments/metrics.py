"""Prometheus metrics through Ray Serve's metrics API (exported by Ray's metrics agent).

Ray Serve adds ``deployment``, ``replica`` and ``application`` tags; the names here get Ray's
``ray_`` prefix on the scrape endpoint. Metric objects are created lazily inside the replica.
"""

from __future__ import annotations

import functools

LATENCY_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 120000]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


@functools.cache
def _gateway():
    from ray.serve import metrics

    tags = ("route", "modality", "tenant")
    return (
        metrics.Counter("mmserve_requests_total", "HTTP requests answered", tag_keys=tags + ("status",)),
        metrics.Counter(
            "mmserve_errors_total", "HTTP requests answered with 4xx/5xx", tag_keys=tags + ("status",)
        ),
        metrics.Histogram(
            "mmserve_request_latency_ms", "gateway latency per request", boundaries=LATENCY_MS, tag_keys=tags
        ),
    )


def observe_request(route: str, modality: str, status: int, latency_ms: float, *, tenant: str) -> None:
    requests, errors, latency = _gateway()
    tags = {"route": route, "modality": modality, "tenant": tenant}
    requests.inc(1, tags={**tags, "status": str(status)})
    if status >= 400:
        errors.inc(1, tags={**tags, "status": str(status)})
    latency.observe(latency_ms, tags=tags)


@functools.cache
def _counters():
    from ray.serve import metrics

    return (
        metrics.Counter("mmserve_throttled_total", "requests refused with 429", tag_keys=("tenant",)),
        metrics.Counter(
            "mmserve_embed_cache_total", "embedding cache look-ups", tag_keys=("modality", "result")
        ),
    )


@functools.cache
def _poison_counter():
    from ray.serve import metrics

    return metrics.Counter(
        "mmserve_poison_total",
        "inputs in flight when a model replica died: suspect (retried), "
        "held (422 poison_request) or refused (held, not sent)",
        tag_keys=("method", "outcome"),
    )


def observe_poison(method: str, outcome: str) -> None:
    _poison_counter().inc(1, tags={"method": method, "outcome": outcome})


def observe_throttled(tenant: str) -> None:
    _counters()[0].inc(1, tags={"tenant": tenant})


def observe_cache(modality: str, hit: bool) -> None:
    _counters()[1].inc(1, tags={"modality": modality, "result": "hit" if hit else "miss"})


@functools.cache
def _batch_histogram():
    from ray.serve import metrics

    return metrics.Histogram(
        "mmserve_batch_size", "items per model forward pass", boundaries=BATCH_SIZES, tag_keys=("method",)
    )


def observe_batch(method: str, size: int) -> None:
    _batch_histogram().observe(size, tags={"method": method})
