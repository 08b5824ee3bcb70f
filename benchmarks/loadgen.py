"""A small HTTP load generator: closed-loop concurrency sweeps and open-loop Poisson arrivals.

Each point repeats measurement windows until two consecutive windows' throughputs agree within
``tolerance`` (10 % by default), then reports throughput, p50/p90/p99/p99.9 and the error rate.

    python -m benchmarks.loadgen --url http://127.0.0.1:8000 --route /v1/embeddings/image \
        --concurrency 1 4 16 --rates 5 10 --out results/image    # writes image.json and image.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

from benchmarks.inputs import Cycle, distinct_photos, more_than_cache
from config.settings import GatewaySettings

Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@dataclass
class Point:
    mode: str  # "closed" (load = concurrency) or "open" (load = arrivals per second)
    load: float
    requests: int
    errors: int
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    windows: int
    window_throughputs: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / max(self.requests, 1)


async def _timed(send: Send, client: httpx.AsyncClient, latencies: list, errors: list) -> None:
    start = time.perf_counter()
    try:
        response = await send(client)
        ok = response.status_code < 400
    except httpx.HTTPError:
        ok = False
    (latencies if ok else errors).append((time.perf_counter() - start) * 1000)


async def closed_window(send: Send, client: httpx.AsyncClient, concurrency: int, seconds: float):
    """``concurrency`` users, each sending its next request when the last one is answered."""
    latencies: list[float] = []
    errors: list[float] = []
    deadline = time.perf_counter() + seconds

    async def user() -> None:
        while time.perf_counter() < deadline:
            await _timed(send, client, latencies, errors)

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def open_window(send: Send, client: httpx.AsyncClient, rate: float, seconds: float, seed: int = 0):
    """Poisson arrivals at ``rate`` per second, whatever the server's speed (no coordinated omission)."""
    latencies: list[float] = []
    errors: list[float] = []
    rng = random.Random(seed)
    tasks, started = [], time.perf_counter()
    next_at = started
    while next_at < started + seconds:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        tasks.append(asyncio.create_task(_timed(send, client, latencies, errors)))
        next_at += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    return latencies, errors, time.perf_counter() - started


def _percentiles(latencies: list[float]) -> list[float]:
    if not latencies:
        return [float("nan")] * 4
    return [float(np.percentile(latencies, q)) for q in (50, 90, 99, 99.9)]


async def stable_point(
    send: Send,
    client: httpx.AsyncClient,
    *,
    mode: str,
    load: float,
    window_s: float,
    tolerance: float = 0.10,
    max_windows: int = 6,
) -> Point:
    """Repeat windows until the last two throughputs agree within ``tolerance``; pool their samples."""
    history: list[tuple[list, list, float]] = []
    for n in range(max_windows):
        if mode == "closed":
            history.append(await closed_window(send, client, int(load), window_s))
        else:
            history.append(await open_window(send, client, load, window_s, seed=n))
        rates = [len(lat) / dur for lat, _, dur in history]
        if len(rates) >= 2 and abs(rates[-1] - rates[-2]) <= tolerance * max(rates[-1], rates[-2]):
            break
    last = history[-2:]
    latencies = [x for lat, _, _ in last for x in lat]
    errors = sum(len(err) for _, err, _ in last)
    seconds = sum(dur for _, _, dur in last)
    p50, p90, p99, p999 = _percentiles(latencies)
    return Point(
        mode=mode,
        load=load,
        requests=len(latencies) + errors,
        errors=errors,
        throughput=len(latencies) / seconds,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        p999_ms=p999,
        windows=len(history),
        window_throughputs=[round(r, 2) for r in rates],
    )


async def sweep(
    send: Send, base_url: str, *, concurrency: list[int], rates: list[float], window_s: float
) -> list[Point]:
    limits = httpx.Limits(max_connections=max(concurrency + [64]), max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        await send(client)  # warm-up
        points = [
            await stable_point(send, client, mode="closed", load=c, window_s=window_s) for c in concurrency
        ]
        points += [await stable_point(send, client, mode="open", load=r, window_s=window_s) for r in rates]
    return points


def plot(series: dict[str, list[Point]], path: Path) -> None:
    """Throughput and p99 against load, one line per system, closed-loop points only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in series.items():
        closed = [p for p in points if p.mode == "closed"]
        left.plot([p.load for p in closed], [p.throughput for p in closed], marker="o", label=name)
        right.plot([p.load for p in closed], [p.p99_ms for p in closed], marker="o", label=name)
    left.set(xlabel="concurrency", ylabel="requests / s", title="throughput (closed loop)")
    right.set(xlabel="concurrency", ylabel="ms", title="p99 latency", yscale="log")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(series: dict[str, list[Point]], out: Path, extra: dict | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {
        name: [asdict(p) | {"error_rate": p.error_rate} for p in points] for name, points in series.items()
    }
    out.with_suffix(".json").write_text(json.dumps(body | (extra or {}), indent=2))
    plot(series, out.with_suffix(".png"))


RAW_HEADERS = {"content-type": "application/octet-stream"}


def image_sender(route: str, images: list[bytes], body: str = "multipart") -> Send:
    """Uploads ``images`` in turn (distinct inputs, so a cache answers none until they wrap), as
    multipart file parts or (``body="raw"``) as the octet-stream body itself."""
    cycle, field_name = Cycle(images), "images" if route.endswith("/image") else "image"
    if body == "raw":
        return lambda client: client.post(route, content=cycle.next(), headers=RAW_HEADERS)
    return lambda client: client.post(route, files={field_name: ("x.jpg", cycle.next())})


def text_sender(route: str, texts: list[str]) -> Send:
    """Posts one text per request, ``texts`` in turn."""
    cycle = Cycle(texts)
    return lambda client: client.post(route, json={"texts": [cycle.next()]})


class Tally:
    """A sender that counts the requests answered with a 2xx: the work the server says it did."""

    def __init__(self, send: Send) -> None:
        self.send, self.ok = send, 0

    async def __call__(self, client: httpx.AsyncClient) -> httpx.Response:
        response = await self.send(client)
        self.ok += response.status_code < 300
        return response


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--route", default="/v1/embeddings/image", help="an image route (multipart upload)")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--rates", type=float, nargs="*", default=[])
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument(
        "--distinct",
        type=int,
        default=more_than_cache(GatewaySettings().embed_cache_size),
        help="distinct photos sent in turn (default: more than the gateway's embedding cache holds)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loadgen"))
    args = parser.parse_args()
    images = distinct_photos(args.distinct)
    points = asyncio.run(
        sweep(
            image_sender(args.route, images),
            args.url,
            concurrency=args.concurrency,
            rates=args.rates,
            window_s=args.window,
        )
    )
    for p in points:
        print(
            f"{p.mode:6s} load={p.load:<6g} {p.throughput:7.1f} req/s  p50 {p.p50_ms:7.1f}  p99 "
            f"{p.p99_ms:7.1f} ms  errors {p.error_rate:.1%}  windows {p.windows}"
        )
    write({args.route: points}, args.out)


if __name__ == "__main__":
    main()
