"""Soak: mixed open-loop load at a fraction of capacity for a long time, with the resident memory of
every serving process sampled as it goes. Not a CI test.

    make serve &                      # or any mmserve on this machine
    python -m benchmarks.soak --url http://127.0.0.1:8000 --minutes 30 --load 0.7 --out results/soak

1. Capacity: each request kind (image classification, text embeddings, a 3 s transcription) alone,
   closed loop at concurrency 4, until two windows agree (``loadgen.stable_point``).
2. Soak: Poisson arrivals of all three kinds at once, each at ``load`` x its capacity divided by the
   number of kinds (so the mix sums to ``load`` of the machine), for ``minutes``.
3. Every 10 s, the RSS of each Ray / Serve process on the machine; at the end, per process, the
   least-squares slope in MB per minute over the soak, and every request's outcome.

Inputs are distinct per request (crops of the test photos, numbered texts, espeak sentences), so
no cache answers them. Traffic goes to loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil

from benchmarks.inputs import Cycle, distinct_photos
from benchmarks.loadgen import Send, open_window, stable_point

LOOPBACK = ("127.0.0.1", "localhost", "::1")
REFUSED = ("429", "503")  # refused before any work ran, in the error shape with Retry-After
SAMPLE_EVERY_S = 10.0


def counted(send: Send, statuses: Counter) -> Send:
    """``send``, with each answer's status (or transport error) counted, so refusals (429/503 in the
    error shape) are told apart from failures."""

    async def wrapped(client: httpx.AsyncClient) -> httpx.Response:
        try:
            response = await send(client)
        except httpx.HTTPError as err:
            statuses[type(err).__name__] += 1
            raise
        statuses[str(response.status_code)] += 1
        return response

    return wrapped


def outcome(statuses: Counter) -> dict:
    refused = sum(n for code, n in statuses.items() if code in REFUSED)
    ok = sum(n for code, n in statuses.items() if code.isdigit() and int(code) < 400)
    return {
        "succeeded": ok,
        "refused": refused,
        "failed": sum(statuses.values()) - ok - refused,
        "statuses": dict(statuses),
    }


def senders() -> dict[str, Send]:
    """One sender per request kind, each cycling through distinct inputs."""
    from tests.assets import speech

    images = Cycle(distinct_photos(64))
    clips = Cycle([speech(f"soak test number {i}, the weather is fine") for i in range(8)])
    return {
        "classify": lambda c: c.post("/v1/classify", files={"image": ("x.jpg", images.next())}),
        "embed_text": lambda c: c.post(
            "/v1/embeddings/text", json={"texts": [f"soak sentence {time.perf_counter_ns()}"]}
        ),
        "transcribe": lambda c: c.post("/v1/audio/transcriptions", files={"file": ("x.wav", clips.next())}),
    }


def serving_processes() -> dict[int, str]:
    """pid -> name of this machine's Ray and Serve processes (replicas, proxy, controller, raylet, gcs)."""
    found = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd or "graphs.launch" in cmd:
            found[proc.info["pid"]] = (proc.info["cmdline"] or [proc.info["name"]])[0][:60]
    return found


@dataclass
class Memory:
    names: dict[int, str] = field(default_factory=dict)
    samples: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # pid -> (s, MB)

    def sample(self, t: float) -> None:
        for pid, name in serving_processes().items():
            try:
                mb = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.names[pid] = name
            self.samples.setdefault(pid, []).append((t, mb))

    def slopes(self) -> dict[str, dict]:
        """Per process: first and last RSS, the least-squares slope in MB per minute over the whole
        soak and over its second half (after caches filled), and whether it lived through the soak
        (replicas that autoscaling started later grow while they load their model: not a leak)."""
        longest = max((len(p) for p in self.samples.values()), default=0)
        out = {}
        for pid, points in self.samples.items():
            if len(points) < 3:
                continue
            t, mb = np.array(points).T
            half = len(t) // 2
            out[f"{self.names[pid]} ({pid})"] = {
                "first_mb": round(float(mb[0]), 1),
                "last_mb": round(float(mb[-1]), 1),
                "slope_mb_per_min": _slope(t, mb),
                "second_half_slope_mb_per_min": _slope(t[half:], mb[half:]),
                "samples": len(points),
                "whole_soak": len(points) >= 0.9 * longest,
            }
        return out


def _slope(t: np.ndarray, mb: np.ndarray) -> float:
    return round(float(np.polyfit(t / 60.0, mb, 1)[0]), 3) if len(t) >= 3 else float("nan")


async def _sample_forever(memory: Memory, started: float) -> None:
    while True:
        memory.sample(time.perf_counter() - started)
        await asyncio.sleep(SAMPLE_EVERY_S)


async def capacity(client: httpx.AsyncClient, kinds: dict[str, Send], window_s: float) -> dict[str, float]:
    out = {}
    for name, send in kinds.items():
        await send(client)  # warm-up
        out[name] = (await stable_point(send, client, mode="closed", load=4, window_s=window_s)).throughput
    return out


async def soak(url: str, *, minutes: float, load: float, window_s: float) -> dict:
    statuses = {k: Counter() for k in senders()}
    kinds = {k: counted(send, statuses[k]) for k, send in senders().items()}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        caps = await capacity(client, kinds, window_s)
        rates = {k: load * caps[k] / len(kinds) for k in kinds}
        for counter in statuses.values():
            counter.clear()  # the capacity probes are not part of the soak
        memory, started = Memory(), time.perf_counter()
        sampler = asyncio.create_task(_sample_forever(memory, started))
        runs = await asyncio.gather(
            *(open_window(kinds[k], client, rates[k], minutes * 60, seed=i) for i, k in enumerate(kinds))
        )
        sampler.cancel()
        memory.sample(time.perf_counter() - started)
    outcomes = {
        k: {"sent": len(lat) + len(err), **outcome(statuses[k]), "p50_ms": _p(lat, 50), "p99_ms": _p(lat, 99)}
        for k, (lat, err, _) in zip(kinds, runs)
    }
    return {
        "minutes": minutes,
        "load": load,
        "capacity_rps": caps,
        "rates_rps": rates,
        "requests": outcomes,
        "failed": sum(o["failed"] for o in outcomes.values()),
        "refused": sum(o["refused"] for o in outcomes.values()),
        "memory": memory.slopes(),
        "cores": psutil.cpu_count(),
    }


def _p(latencies: list[float], q: float) -> float:
    return round(float(np.percentile(latencies, q)), 1) if latencies else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--load", type=float, default=0.7, help="fraction of the measured capacity")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per capacity window")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/soak.json"))
    args = parser.parse_args(argv)
    if urlparse(args.url).hostname not in LOOPBACK:
        parser.error("soak only a server on this machine (a loopback URL)")
    result = asyncio.run(soak(args.url, minutes=args.minutes, load=args.load, window_s=args.window))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: result[k] for k in ("capacity_rps", "rates_rps", "requests", "failed", "refused")}, indent=2
        )
    )
    whole = {k: v for k, v in result["memory"].items() if v["whole_soak"]}
    worst = max(whole.items(), key=lambda kv: kv[1]["slope_mb_per_min"], default=None)
    print(f"memory: {len(whole)} processes lived through the soak; steepest slope {worst}")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
