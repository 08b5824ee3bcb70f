"""A real Prometheus server (Debian's ``prometheus``) scrapes the session's served graph through Ray's
metrics export; after known traffic, PromQL over its HTTP API returns the stage histograms'
quantiles and the refusals by reason. The server also loads configs/observability/alerts.yml, so a
rule Prometheus itself rejects fails here. Every wait is bounded."""

from __future__ import annotations

import base64
import math
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests import assets

ALERTS = Path(__file__).resolve().parents[2] / "configs" / "observability" / "alerts.yml"
WAIT_S = 90.0  # Ray's agent exports every few seconds; Prometheus scrapes every SCRAPE_S
SCRAPE_S = 10  # as long as tests/assets.scrape_metrics waits for the same endpoint, which CI answered


@pytest.fixture(scope="module")
def prometheus(ray_cluster, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: install Debian's prometheus package (make test-deps)")
    home = tmp_path_factory.mktemp("prometheus")
    config = home / "prometheus.yml"
    config.write_text(
        # Late in a full run Ray's endpoint holds every Ray and Serve series of the session and takes
        # more than a second to render on 2 busy cores: a 1 s scrape timed out each time (CI).
        f"global: {{scrape_interval: {SCRAPE_S}s, scrape_timeout: {SCRAPE_S}s, evaluation_interval: 1s}}\n"
        f"rule_files: [{ALERTS}]\n"
        "scrape_configs:\n"
        "  - job_name: mmserve\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{ray_cluster['metrics_port']}']}}]\n"
    )
    port = assets.free_port()
    log = (home / "prometheus.log").open("w")
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _ready(url), 30.0, "Prometheus did not become ready", home / "prometheus.log")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _until(found, timeout_s: float, what: str, log: Path | None = None):
    deadline, value = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(1)
    detail = log.read_text()[-2000:] if log else ""
    raise AssertionError(f"{what} within {timeout_s:g}s; last: {value!r}\n{detail}")


def _query(url: str, promql: str) -> dict[tuple, float]:
    """The instant vector ``promql`` gives now, as {sorted label items: value}."""
    answer = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", answer
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in answer["data"]["result"]}


def _series(url: str, promql: str, labels: dict, at_least: float = 0.0) -> float:
    """The value of the series of ``promql`` with ``labels`` once it exists (and is >= ``at_least``)."""

    last: dict = {}

    def found():
        last["result"] = _query(url, promql)
        for key, value in last["result"].items():
            if labels.items() <= dict(key).items() and not math.isnan(value) and value >= at_least:
                return value
        return None

    try:
        return _until(found, WAIT_S, f"no series {labels} (>= {at_least}) for {promql}")
    except AssertionError as exc:
        names = requests.get(f"{url}/api/v1/label/__name__/values", timeout=10).json()["data"]
        mine = [n for n in names if n.startswith("ray_mmserve_")]
        targets = requests.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = [(t["health"], t["lastError"], t["lastScrapeDuration"]) for t in targets]
        raise AssertionError(
            f"{exc}\nlast result: {last.get('result')}\nscraped: {mine}\ntargets: {health}"
        ) from None


def _unseen_jpeg() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng().integers(0, 256, (96, 128, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def traffic(base_url):
    """Known traffic: 4 classifications, 3 text embeddings, an image embedding (of an image no cache
    holds) and 3 requests refused for their deadline."""
    photo = assets.photo("chelsea")
    for _ in range(4):
        answer = requests.post(f"{base_url}/v1/classify", files={"image": photo}, timeout=120)
        assert answer.status_code == 200, answer.text
    for text in ("a cat", "a dog", "a ship"):
        answer = requests.post(
            f"{base_url}/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": [text]}, timeout=120
        )
        assert answer.status_code == 200, answer.text
    url = "data:image/jpeg;base64," + base64.b64encode(_unseen_jpeg()).decode()  # decoded in the replica
    answer = requests.post(
        f"{base_url}/v1/embeddings", json={"model": "conse-efficientnet-lite0", "input": url}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    for _ in range(3):
        answer = requests.post(
            f"{base_url}/v1/classify",
            files={"image": photo},
            headers={"x-request-timeout": "0.000001"},
            timeout=60,
        )
        assert answer.status_code == 504, answer.text
        assert answer.json()["error"]["type"] == "deadline_exceeded"


STAGES = {  # stage -> (its quantile over all scrapes so far, the series the traffic must give)
    "queue wait p50": (
        "histogram_quantile(0.5, sum by (le, target, modality) (ray_mmserve_queue_wait_seconds_bucket))",
        {"target": "VisionEncoder", "modality": "image"},
    ),
    "batch wait p90": (
        "histogram_quantile(0.9, sum by (le, deployment, method, modality) (ray_mmserve_batch_wait_seconds_bucket))",
        {"deployment": "VisionEncoder", "method": "classify", "modality": "image"},
    ),
    "text forward p99": (
        "histogram_quantile(0.99, sum by (le, deployment, method) (ray_mmserve_forward_seconds_bucket))",
        {"deployment": "TextEncoder", "method": "embed"},
    ),
    "classify end to end p50": (
        "histogram_quantile(0.5, sum by (le, route) (ray_mmserve_request_duration_seconds_bucket))",
        {"route": "/v1/classify"},
    ),
    "image decode p50": (
        "histogram_quantile(0.5, sum by (le, deployment) (ray_mmserve_decode_seconds_bucket))",
        {"deployment": "VisionEncoder"},
    ),
}


def test_stage_histograms_give_quantiles_per_deployment_and_modality(prometheus, traffic):
    quantiles = {stage: _series(prometheus, promql, labels) for stage, (promql, labels) in STAGES.items()}
    print(f"\nPromQL stage quantiles (s): {quantiles}")
    for value in quantiles.values():
        assert 0 <= value <= 120  # inside the buckets: a quantile of observations, not +Inf
    assert quantiles["text forward p99"] > 0 and quantiles["classify end to end p50"] > 0
    # the 4 classifications were sent one after another: each ran as a batch of its own. (Counts,
    # not _sum: Ray's agent exports a histogram's sum from its buckets, an approximation.)
    batches = 'sum(ray_mmserve_batch_size_count{deployment="VisionEncoder", method="classify"})'
    assert _series(prometheus, batches, {}, at_least=4) >= 4


def test_refusals_by_reason(prometheus, traffic):
    by_reason = "sum by (reason, modality) (ray_mmserve_refusals_total)"
    deadline = _series(prometheus, by_reason, {"reason": "deadline", "modality": "image"}, at_least=3)
    print(f"\nPromQL {by_reason} -> {_query(prometheus, by_reason)}")
    assert deadline >= 3
    assert _series(
        prometheus, 'sum(ray_mmserve_requests_total{route="/v1/classify", status="504"})', {}, at_least=3
    )


def test_serve_replica_metrics_the_alerts_use_are_scraped(prometheus, traffic):
    healthy = _series(
        prometheus,
        "sum by (deployment) (ray_serve_deployment_replica_healthy)",
        {"deployment": "VisionEncoder"},
    )
    assert healthy >= 1
    assert (
        _series(
            prometheus,
            "sum by (deployment) (ray_serve_deployment_replica_starts_total)",
            {"deployment": "VisionEncoder"},
        )
        >= 1
    )
    rules = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {g["name"] for g in rules} == {"mmserve-slo", "mmserve-capacity"}
    assert all(rule["health"] != "err" for g in rules for rule in g["rules"]), rules
