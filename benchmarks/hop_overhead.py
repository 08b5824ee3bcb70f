"""Ray Serve's overhead per deployment-to-deployment hop, under each inter-deployment transport.

    python -m benchmarks.hop_overhead --calls 300 --out benchmarks/results/hop_overhead.json

Transports, each in a fresh Ray (Serve reads these variables when it is imported, in every process):
- ``default``: handle calls are Ray actor calls (arguments through Ray's object store / core worker);
- ``grpc``: ``RAY_SERVE_USE_GRPC_BY_DEFAULT=1``: handle calls go by value over the replicas' gRPC
  servers (capped at ``RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH``, 4 MiB unless raised: set here to
  the largest message mmserve sends, see ``GRPC_MAX_MESSAGE``);
- ``grpc_handle``: default environment, but every handle made ``.options(_by_reference=False)``;
- ``throughput``: ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (Ray 2.60 serve/_private/constants.py: gRPC by
  value, direct ingress (each ingress replica also serves HTTP on a port of its own, 30000-31000,
  and drains for 30 s when stopped), handle routers on the caller's event loop, async user code on
  the replica's main loop, GC frozen after start-up, request logs buffered 1000 lines, Serve logs
  not copied to stderr). A handle's router then lives on the loop that first used it, so each mode
  runs all its handle calls, shutdown included, in one event loop.

In each: a driver calls (1) ``Echo`` through a handle: one hop; (2) ``Relay``, which calls ``Echo``
through its own handle: two hops. The difference of the medians is one hop. Both with a small
argument and with a decoded photo (a distinct ~420 KB uint8 array per call, as the gateway sends
VisionEncoder). (3) A no-op over HTTP through Serve's proxy. (4) The real graph (not in
``grpc_handle``, whose switch is per handle): ``POST /v1/classify`` with a distinct JPEG per request,
one at a time (proxy -> Gateway -> VisionEncoder). Guards: Echo counts its calls, Relay reports the
transport its handle used, and VisionEncoder's batch counters must show every classify request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI
from ray import serve

from tests.assets import free_port

TARGET_PER_HOP_MS = 3.0
# The largest payload one mmserve handle call carries: 600 s of float32 audio at 16 kHz (38.4 MB;
# MediaLimits.max_audio_seconds), far above an image (1024 x 1024 x 3 uint8 = 3 MiB).
GRPC_MAX_MESSAGE = 64 * 1024 * 1024
MODES = {
    "default": {},
    "grpc": {
        "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(GRPC_MAX_MESSAGE),
    },
    "grpc_handle": {"RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(GRPC_MAX_MESSAGE)},
    "throughput": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(GRPC_MAX_MESSAGE),
    },
}
MODE_SWITCHES = (
    "RAY_SERVE_USE_GRPC_BY_DEFAULT",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED",
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH",
)
IMAGE_SIDE = 376  # 376 x 376 x 3 uint8 = 424 KB, a decoded photo as the gateway ships it

app = FastAPI()


@app.get("/noop")
def noop() -> dict:
    return {"ok": True}


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class Echo:
    def __init__(self) -> None:
        self.count = 0

    def ping(self, x) -> int:
        self.count += 1
        return int(x[0, 0, 0]) if isinstance(x, np.ndarray) else x

    def calls(self) -> int:
        return self.count


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Relay:
    def __init__(self, echo, by_value: bool) -> None:
        self.echo = echo.options(_by_reference=False) if by_value else echo
        self.by_reference: bool | None = None

    async def ping(self, x) -> int:
        response = self.echo.ping.remote(x)
        self.by_reference = response.by_reference
        return await response

    def transport(self) -> str:
        return {None: "unused", True: "by reference (actor call)", False: "by value (gRPC)"}[
            self.by_reference
        ]


async def _median_ms_async(fn, calls: int) -> float:
    """Median milliseconds of ``calls`` awaited calls ``fn(0..calls-1)``, after 20 warm-up calls
    ``fn(calls..calls+19)`` (distinct inputs: the gateway caches embeddings). Handle calls are
    awaited in the driver's loop: throughput mode runs Serve's router on the caller's loop, so a
    blocking ``.result()`` there has no loop to run on."""
    for i in range(20):
        await fn(calls + i)
    times = []
    for i in range(calls):
        start = time.perf_counter()
        await fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _blocking(fn):
    """A blocking call ``fn(i)`` (an HTTP request) as the coroutine function ``_median_ms_async`` awaits."""

    async def call(i: int) -> None:
        fn(i)

    return call


def photo_arrays(count: int, seed: int = 0) -> list[np.ndarray]:
    """Distinct ~420 KB decoded-photo arrays: random crops of the bundled photos, each marked with its
    index."""
    from tools.demo_data import source_photo

    rng = np.random.default_rng(seed)
    sources = [source_photo(n) for n in ("chelsea", "coffee", "astronaut", "rocket")]
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        top, left = (int(rng.integers(0, max(1, d - IMAGE_SIDE + 1))) for d in src.shape[:2])
        crop = np.zeros((IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
        part = src[top : top + IMAGE_SIDE, left : left + IMAGE_SIDE]
        crop[: part.shape[0], : part.shape[1]] = part
        crop[0, 0, 0] = i % 256
        out.append(crop)
    return out


def bare_uvicorn_ms(calls: int) -> float:
    port = free_port()
    code = (
        "import uvicorn; from benchmarks.hop_overhead import app; "
        f"uvicorn.run(app, port={port}, log_level='warning')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):
                try:
                    client.get("/noop")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            return asyncio.run(_median_ms_async(_blocking(lambda i: client.get("/noop")), calls))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def graph_args() -> dict:
    """The served graph, one replica each, search and fusion off (they are not on the classify path)."""
    fixed = {"min_replicas": 1, "max_replicas": 1}
    return {
        "gateway": {"num_cpus": 0, "autoscaling": fixed},
        "vision": {"num_cpus": 1, "autoscaling": fixed},
        "text": {"num_cpus": 0.1, "autoscaling": fixed},
        "audio": {"num_cpus": 0.1, "autoscaling": fixed, "model": {"model": "whisper-tiny.en"}},
        "search": {"enabled": False},
        "fusion": {"enabled": False},
    }


async def classify_ms(port: int, calls: int) -> tuple[float, int]:
    """Median latency of POST /v1/classify, one request at a time, a distinct JPEG each; and how
    many classify items VisionEncoder ran meanwhile."""
    from tools.demo_data import make_image

    rng = np.random.default_rng(1)
    jpegs = [
        make_image(rng, ("chelsea", "coffee", "astronaut", "rocket")[i % 4], hard=False)
        for i in range(calls + 20)
    ]
    stats = serve.get_deployment_handle("VisionEncoder", app_name="graph").batch_stats
    before = _classified(await stats.remote())
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:

        async def one(i: int) -> None:
            client.post(
                "/v1/classify", files={"image": ("photo.jpg", jpegs[i % len(jpegs)])}
            ).raise_for_status()

        median = await _median_ms_async(one, calls)
    return median, _classified(await stats.remote()) - before


def _classified(stats: dict) -> int:
    return int(sum(size * count for size, count in stats.get("classify", {}).items()))


def measure(mode: str, calls: int, graph_calls: int) -> dict:
    """One transport, in this process's fresh Ray (the caller set the environment)."""
    from graphs import local_ray

    context = local_ray.start(num_cpus=2, log_to_driver=False)
    try:
        out = asyncio.run(_measure_in_one_loop(mode, calls, graph_calls))
    finally:
        local_ray.stop(context)
    out["per_hop_ms"] = out["two_hops_ms"] - out["one_hop_ms"]
    out["image_per_hop_ms"] = out["image_two_hops_ms"] - out["image_one_hop_ms"]
    return out


async def _measure_in_one_loop(mode: str, calls: int, graph_calls: int) -> dict:
    """Every handle call, from first to shutdown, in one event loop: with
    ``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0`` (throughput mode) a handle's router lives on the
    loop that first used it, and Serve caches handles across calls (``get_deployment_handle``,
    shutdown), so a second ``asyncio.run`` finds that router's loop closed."""
    from graphs.app import build_app

    by_value = mode == "grpc_handle"
    images = photo_arrays(calls + 20)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        relay = serve.run(Relay.bind(Echo.bind(), by_value), name="hops", route_prefix="/hops")
        echo = serve.get_deployment_handle("Echo", app_name="hops")
        if by_value:
            relay, echo = relay.options(_by_reference=False), echo.options(_by_reference=False)
        out = await _handle_hops(echo, relay, images, calls)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            client.get("/hops/noop").raise_for_status()
            noop = _blocking(lambda i: client.get("/hops/noop"))
            out["http_via_serve_proxy_ms"] = await _median_ms_async(noop, calls)
        if mode != "grpc_handle":  # the gateway's own handles take the environment's transport
            serve.run(build_app(graph_args()), name="graph", route_prefix="/")
            out["classify_ms"], out["classify_items_run"] = await classify_ms(port, graph_calls)
    finally:
        await serve.shutdown_async()
    return out


async def _handle_hops(echo, relay, images: list[np.ndarray], calls: int) -> dict:
    out = {
        "one_hop_ms": await _median_ms_async(lambda i: echo.ping.remote(i), calls),
        "two_hops_ms": await _median_ms_async(lambda i: relay.ping.remote(i), calls),
        "image_one_hop_ms": await _median_ms_async(lambda i: echo.ping.remote(images[i]), calls),
        "image_two_hops_ms": await _median_ms_async(lambda i: relay.ping.remote(images[i]), calls),
    }
    out["echo_calls"] = await echo.calls.remote()
    out["relay_transport"] = await relay.transport.remote()
    return out


def guard(mode: str, out: dict, calls: int, graph_calls: int) -> list[str]:
    """What shows this mode's hops really ran, and on the transport named."""
    problems = []
    expected = 4 * (calls + 20)  # four series of warm-up + timed calls (Relay's go on to Echo)
    if out["echo_calls"] < expected:
        problems.append(f"Echo ran {out['echo_calls']} calls, expected {expected}")
    by_value = mode != "default"
    if out["relay_transport"] != ("by value (gRPC)" if by_value else "by reference (actor call)"):
        problems.append(f"Relay's handle went {out['relay_transport']}")
    if "classify_ms" in out and out["classify_items_run"] < graph_calls:
        problems.append(
            f"VisionEncoder classified {out['classify_items_run']} images for {graph_calls} requests"
        )
    return problems


def run_mode(mode: str, calls: int, graph_calls: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in MODE_SWITCHES} | MODES[mode]
    command = [
        sys.executable,
        "-m",
        "benchmarks.hop_overhead",
        "--one-mode",
        mode,
        "--calls",
        str(calls),
        "--graph-calls",
        str(graph_calls),
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-5:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def verdicts(results: dict, bare_http_ms: float) -> list[str]:
    lines = []
    for mode, out in results.items():
        if "error" in out:
            lines.append(f"{mode}: failed: {out['error']}")
            continue
        met = "met" if out["per_hop_ms"] <= TARGET_PER_HOP_MS else "missed"
        parts = [
            f"{mode}: per hop {out['per_hop_ms']:.2f} ms (target <= {TARGET_PER_HOP_MS} ms: {met})",
            f"with a 424 KB image {out['image_per_hop_ms']:.2f} ms",
            f"proxy adds {out['http_via_serve_proxy_ms'] - bare_http_ms:.2f} ms over bare uvicorn",
        ]
        if "classify_ms" in out:
            parts.append(f"classify through the graph {out['classify_ms']:.1f} ms")
        if out["guard"]:
            parts.append(f"GUARD FAILED: {out['guard']}")
        lines.append("; ".join(parts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--graph-calls", type=int, default=100)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--one-mode", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.one_mode:
        print(json.dumps(measure(args.one_mode, args.calls, args.graph_calls)))
        return
    results = {}
    for mode in args.modes:
        out = run_mode(mode, args.calls, args.graph_calls)
        if "error" not in out:
            out = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
            out["guard"] = guard(mode, out, args.calls, args.graph_calls)
        results[mode] = out
    bare = bare_uvicorn_ms(args.calls)
    report = {
        "cores": os.cpu_count(),
        "calls": args.calls,
        "graph_calls": args.graph_calls,
        "target_per_hop_ms": TARGET_PER_HOP_MS,
        "http_bare_uvicorn_ms": round(bare, 3),
        "modes": results,
    }
    report["verdicts"] = verdicts(results, bare)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    if any("error" in out or out["guard"] for out in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
