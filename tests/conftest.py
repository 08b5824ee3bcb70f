"""Shared fixtures. One real Ray session per test run serves the graph and HTTP tests."""

from __future__ import annotations

import os
import time

import pytest

from config.tracing import ENDPOINT_ENV, TracingConfig, with_tracing
from graphs import local_ray
from tests.assets import free_port
from tests.otlp_receiver import Receiver

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Before any test module imports ray: the tests' Ray is as private as `make serve`'s (loopback
# only, token auth on), and ray reads these variables when it is imported.
local_ray.prepare()

TEST_ARGS = {
    "gateway": {
        "num_cpus": 0,
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        "settings": {
            "max_audio_seconds": 20,
            "max_image_pixels": 20_000_000,
            "body_timeout_s": 3.0,
            "body_grace_s": 1.0,
            "max_body_bytes": 8 * 1024 * 1024,
            "live_speech": {"idle_timeout_s": 3.0, "max_buffer_s": 20.0},
        },
    },
    "vision": {"num_cpus": 0.25, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
    "text": {
        "num_cpus": 0.25,
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        "batch": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
    },
    "audio": {
        "num_cpus": 0.25,
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        "model": {"model": "whisper-base", "cpu_threads": 2},
    },
    # Off here so the other test apps built from TEST_ARGS never share a Milvus Lite file;
    # the `served` app turns both on with session-private paths.
    "search": {"enabled": False},
    "fusion": {"enabled": False},
    "batch": {"enabled": False},
}


def pytest_report_header(config) -> str:
    """The CPU and its code-path features (the numeric gates depend on them; see tests/cpu_line.py)."""
    from tests.cpu_line import line

    return line()


def pytest_collection_modifyitems(session, config, items):
    """tests/cluster first: each of its modules starts (and stops) its own multi-node Ray, which
    cannot share this process with the session's single-node ``ray_cluster`` once that has started
    (one driver per process), nor should run beside it (one Ray per machine in tests)."""
    items.sort(key=lambda item: "tests/cluster/" not in item.nodeid)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and spinning OpenMP workers crawl on a busy 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def otlp_receiver():
    """A real OTLP/HTTP receiver (tests/otlp_receiver.py) for the session's Ray, which traces at
    sampling 0: only a request whose ``traceparent`` asks for it is traced (tests/http/test_traces.py)."""
    with Receiver() as receiver:
        yield receiver


def tracing_env(endpoint: str) -> dict:
    """The job's runtime_env for tracing as ``graphs.launch`` sets it, exporting to ``endpoint`` soon
    after each span ends (200 ms, not the SDK's 5 s)."""
    env = with_tracing(None, TracingConfig(enabled=True, sampling_ratio=0.0)) or {}
    env["env_vars"] |= {ENDPOINT_ENV: endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    return env


@pytest.fixture(scope="session")
def ray_cluster(otlp_receiver):
    """A local Ray with one *logical* GPU, so fractional GPU placement is testable without CUDA."""
    from ray import serve

    # Ray picks the metrics port itself: one we picked (free_port) could be taken by the time the raylet
    # binds it, and a raylet that cannot bind it dies (ray.init then reports only a startup timeout).
    context = local_ray.start(
        num_cpus=4, num_gpus=1, log_to_driver=False, runtime_env=tracing_env(otlp_receiver.endpoint)
    )
    metrics_port = context.address_info["metrics_export_port"]
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield {
        "port": port,
        "metrics_port": metrics_port,
        "gcs_address": context.address_info["gcs_address"],
        "session_dir": context.address_info["session_dir"],
    }
    serve.shutdown()
    local_ray.stop(context)  # also leaves no Ray session data behind


def served_args(data_dir) -> dict:
    """TEST_ARGS with search and fusion on, their data under ``data_dir``."""
    return {
        **TEST_ARGS,
        "search": {"uri": str(data_dir / "search.db"), "num_cpus": 0},
        "fusion": {"store": str(data_dir / "heads"), "num_cpus": 0, "max_heads": 2},
        # small blocks and batches, so a test of a few lines commits several blocks
        "batch": {
            "store": str(data_dir / "batches"),
            "block_size": 2,
            "image": {"num_cpus": 0.5, "batch_size": 2},
            "text": {"num_cpus": 0.5, "batch_size": 2},
            "audio": {"num_cpus": 0.5, "batch_size": 2},
        },
    }


@pytest.fixture(scope="session")
def served(ray_cluster, tmp_path_factory):
    """The mmserve graph with the packaged offline models, deployed once for the session."""
    from ray import serve

    from graphs.app import build_app

    data_dir = tmp_path_factory.mktemp("mmserve-data")
    args = served_args(data_dir)
    started = time.monotonic()
    serve.run(build_app(args), name="mmserve", route_prefix="/")
    print(f"\nmmserve test app deployed in {time.monotonic() - started:.1f}s")
    return {
        "app": "mmserve",
        "base_url": f"http://127.0.0.1:{ray_cluster['port']}",
        "args": args,
        "data_dir": data_dir,
    }


@pytest.fixture(scope="session")
def base_url(served) -> str:
    return served["base_url"]
