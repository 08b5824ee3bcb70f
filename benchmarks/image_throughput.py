"""Image-embedding throughput, three ways, measured side by side in one run on this machine:

(a) raw: the in-process batched model loop (decode + preprocess + ConSE forward, batches of 16);
(b) naive: one request -> one unbatched fp32 forward, FastAPI + uvicorn (the guide's style);
(c) mmserve: the served graph (gateway + VisionEncoder with @serve.batch, max batch 16).

    python -m benchmarks.image_throughput --window 5 --out benchmarks/results/image_throughput

Prints images/s of each, the ratios the performance issue targets (served / raw >= 0.8; served /
naive >= 4 at concurrency 16 with a p99 no worse), and writes JSON plus a PNG.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from benchmarks import loadgen
from benchmarks.timing import throughput
from tests import assets
from tests.assets import free_port

ROUTE = "/v1/embeddings/image"
MAX_BATCH = 16


def raw_loop(seconds: float) -> dict:
    """Images/s of the model alone in this process: full path and forward-only."""
    from models.media import decode_image
    from models.registry import TextModelSpec, VisionModelSpec, load_classifier, load_embedder

    embedder = load_embedder(VisionModelSpec(), TextModelSpec(), classifier=load_classifier(VisionModelSpec()))
    jpeg = assets.photo("chelsea")

    def full() -> None:
        embedder.embed(torch.stack([embedder.preprocess(decode_image(jpeg)) for _ in range(MAX_BATCH)]))

    batch = torch.stack([embedder.preprocess(decode_image(jpeg))] * MAX_BATCH)
    return {"full_images_per_s": throughput(full, MAX_BATCH, seconds)[0],
            "forward_only_images_per_s": throughput(lambda: embedder.embed(batch), MAX_BATCH, seconds)[0],
            "torch_threads": torch.get_num_threads()}


def _wait_ready(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def run_naive(concurrency: list[int], window: float) -> list[loadgen.Point]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.naive_server", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/healthz")
        return asyncio.run(loadgen.sweep(loadgen._image_sender(ROUTE), f"http://127.0.0.1:{port}",
                                         concurrency=concurrency, rates=[], window_s=window))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def served_args(cpus: float, precision: str = "fp32") -> dict:
    fixed = {"min_replicas": 1, "max_replicas": 1}
    return {"gateway": {"num_cpus": 0, "autoscaling": fixed},
            "vision": {"num_cpus": cpus, "autoscaling": fixed, "model": {"precision": precision},
                       "batch": {"max_batch_size": MAX_BATCH,
                                                                          "batch_wait_timeout_s": 0.01}},
            "text": {"num_cpus": 0.1, "autoscaling": fixed},
            "audio": {"num_cpus": 0.1, "autoscaling": fixed, "model": {"model": "whisper-tiny.en"}}}


def process_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of each Ray process, by its title (ray::...), plus this one."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="ignore")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if proc.name == str(os.getpid()):
            title = "load generator + driver"
        elif not title.startswith("ray::") and "raylet" not in title and "gcs_server" not in title:
            continue
        name = title.split(" ")[0].rsplit("/", 1)[-1]
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def cpu_profile(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores used by each process over the window (1.0 = one core busy all the time)."""
    used = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / seconds for k in after}
    return {k: round(v, 3) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0.005}


def run_served(concurrency: list[int], window: float, cpus: float, precision: str) -> tuple[list[loadgen.Point], dict]:
    from ray import serve

    from graphs import local_ray
    from graphs.app import build_app

    context = local_ray.start(num_cpus=4, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(served_args(cpus, precision)), name="bench", route_prefix="/")
        before, started = process_cpu_seconds(), time.perf_counter()
        points = asyncio.run(loadgen.sweep(loadgen._image_sender(ROUTE), f"http://127.0.0.1:{port}",
                                           concurrency=concurrency, rates=[], window_s=window))
        profile = cpu_profile(before, process_cpu_seconds(), time.perf_counter() - started)
        batches = serve.get_deployment_handle("VisionEncoder", app_name="bench").batch_stats.remote().result()
        return points, {"batch_sizes": batches, "cores_used_by_process": profile}
    finally:
        serve.shutdown()
        local_ray.stop(context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--vision-cpus", type=float, default=2.0,
                        help="num_cpus of the VisionEncoder replica (Ray sets its torch threads from it)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                        help="VisionEncoder precision for the served graph (raw and naive stay fp32)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/image_throughput"))
    args = parser.parse_args()
    raw = raw_loop(args.window * 2)
    print(f"raw loop: {raw}", flush=True)
    naive = run_naive(args.concurrency, args.window)
    served, served_info = run_served(args.concurrency, args.window, args.vision_cpus, args.precision)
    top = max(args.concurrency)
    s16, n16 = (next(p for p in pts if p.load == top) for pts in (served, naive))
    ratios = {"served_over_raw_full": s16.throughput / raw["full_images_per_s"],
              "served_over_raw_forward_only": s16.throughput / raw["forward_only_images_per_s"],
              f"served_over_naive_at_c{top}": s16.throughput / n16.throughput,
              f"p99_served_over_naive_at_c{top}": s16.p99_ms / n16.p99_ms}
    for name, points in (("naive", naive), ("mmserve", served)):
        for p in points:
            print(f"{name:8s} c={p.load:<4g} {p.throughput:7.1f} img/s  p50 {p.p50_ms:7.1f}  p99 {p.p99_ms:7.1f} ms"
                  f"  errors {p.error_rate:.1%}")
    print("served batch sizes:", served_info["batch_sizes"].get("embed"))
    print("cores used during the served sweep:", served_info["cores_used_by_process"])
    print("ratios:", {k: round(v, 3) for k, v in ratios.items()})
    loadgen.write({"naive": naive, "mmserve": served}, args.out,
                  extra={"raw": raw, "ratios": ratios, "served": served_info, "cpu_count": os.cpu_count(),
                         "vision_precision": args.precision})


if __name__ == "__main__":
    main()
