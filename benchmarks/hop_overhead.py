"""Ray Serve's overhead per hop, measured with no-op deployments on this machine.

    python -m benchmarks.hop_overhead --calls 300

A driver calls (1) ``Echo`` directly through a handle: one hop; (2) ``Relay``, which calls ``Echo``
through its own handle: two hops. The difference of the medians is the cost of one
deployment-to-deployment hop, the kind the gateway adds per model call. (3) The same no-op over HTTP
through Serve's proxy, against a bare uvicorn app with the same route, gives the proxy's share.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import httpx
from fastapi import FastAPI
from ray import serve

from tests.assets import free_port

app = FastAPI()


@app.get("/noop")
def noop() -> dict:
    return {"ok": True}


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class Echo:
    def ping(self, x: int) -> int:
        return x


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Relay:
    def __init__(self, echo) -> None:
        self.echo = echo

    async def ping(self, x: int) -> int:
        return await self.echo.ping.remote(x)


def _median_ms(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bare_uvicorn_ms(calls: int) -> float:
    port = free_port()
    code = f"import uvicorn; from benchmarks.hop_overhead import app; uvicorn.run(app, port={port}, log_level='warning')"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):
                try:
                    client.get("/noop")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            return _median_ms(lambda: client.get("/noop"), calls)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    from graphs import local_ray

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    context = local_ray.start(num_cpus=2, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        relay = serve.run(Relay.bind(Echo.bind()), name="hops", route_prefix="/")
        echo = serve.get_deployment_handle("Echo", app_name="hops")
        one = _median_ms(lambda: echo.ping.remote(1).result(), args.calls)
        two = _median_ms(lambda: relay.ping.remote(1).result(), args.calls)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            served_http = _median_ms(lambda: client.get("/noop"), args.calls)
    finally:
        serve.shutdown()
        local_ray.stop(context)
    bare_http = bare_uvicorn_ms(args.calls)
    result = {"one_hop_ms": one, "two_hops_ms": two, "per_hop_ms": two - one,
              "http_via_serve_proxy_ms": served_http, "http_bare_uvicorn_ms": bare_http,
              "proxy_overhead_ms": served_http - bare_http}
    print(json.dumps({k: round(v, 3) for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
