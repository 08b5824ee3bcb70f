"""Image- and text-embedding throughput, measured side by side in one run on this machine:

(a) raw ceiling: the in-process model loop, decode + preprocess + ConSE forward included, over a grid
    (batch 1, 8, 16 x intra-op threads x parallel workers); the best cell is the ceiling. Threads and
    workers are the powers of two up to the machine's cores, in the cells that use from half to twice
    its cores (threads x workers): on 2 cores threads 1, 2 x workers 1, 2;
(b) naive: one request -> one unbatched fp32 torch forward, FastAPI + uvicorn (the guide's style), one
    process whose torch uses every core (its cores used are reported);
(c) mmserve: the served graph (gateway + VisionEncoder / TextEncoder with @serve.batch), laid out for
    the machine (``served_layout``): on 2 cores one replica each, the encoders with 2 CPUs; on more,
    one gateway replica per 4 cores (it decodes and preprocesses) and one encoder replica of 4 CPUs per
    8 cores, so the graph, like the other two, can keep every core busy.

    python -m benchmarks.image_throughput --window 3 --out benchmarks/results/image_throughput

Where the CPU goes (issue 24): ``--profile`` adds an image sweep at the top concurrency while py-spy
samples the gateway, the HTTP proxy and the VisionEncoder replicas (``benchmarks.pyspy``: an SVG flame
graph and top-20 tables per process into ``<out>_profile/``); ``--served-only`` runs only the served
graph and prints CPU ms per request per process; ``--tracing`` runs that with tracing off and at
sampling 1.0 and prints what tracing costs (``benchmarks.tracing_cost``); ``--ingress proxy direct
haproxy`` runs it once per Ray Serve ingress (``benchmarks.ingress_modes``), each in its own process,
side by side:

    python -m benchmarks.image_throughput --ingress proxy direct haproxy --rounds 2 --profile \
        --concurrency 16 --text-concurrency 32 --window 4 --out benchmarks/results/ingress

On a machine without the packaged MiniLM and Whisper (the GPU machine's 16 cores), ``--text-model``
and ``--audio-model`` name random-weight stand-ins of the same architecture (``benchmarks.standins``;
speed does not depend on weight values); the naive server gets the same text model.

Every request carries a distinct input (crops and re-encodings of the test photos, more of them than
the gateway's embedding cache holds; numbered sentences), so the model does the work; cache-hit
throughput (one photo sent again and again) is its own line. A guard fails the run (exit 1) when the
deployment measured did not embed as many items as requests were answered, read from its batch
counters. Prints the grid, each sweep, the cores each process used, and the targets of the
performance issue with met / missed; writes JSON plus a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import torch

from benchmarks import ingress_modes, loadgen, pyspy, tracing_cost
from benchmarks.inputs import distinct_photos, distinct_texts, more_than_cache
from config.args import AppArgs
from config.settings import GatewaySettings
from tests.assets import free_port, photo

IMAGE_ROUTE, TEXT_ROUTE = "/v1/embeddings/image", "/v1/embeddings/text"
GRID_BATCHES = (1, 8, 16)
AUDIO_MODEL = '{"model": "whisper-tiny.en"}'  # the graph always holds an AudioModel; idle here
MIN_WORK = 0.95  # items a deployment must have embedded per request answered, or the run fails


# ------------------------------------------------------------------------------------------- raw
def _raw_worker(embedder, jpegs: list[bytes], batch: int, seconds: float, rates: list[float]) -> None:
    """Whole batches of decode -> preprocess -> embed until ``seconds`` have passed; appends images/s."""
    from models.media import decode_image

    done, started = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - started < seconds:
        chunk = [jpegs[(done + k) % len(jpegs)] for k in range(batch)]
        embedder.embed(torch.stack([embedder.preprocess(decode_image(j)) for j in chunk]))
        done += batch
    rates.append(done / (time.perf_counter() - started))


def raw_cell(embedder, jpegs: list[bytes], *, batch: int, workers: int, seconds: float) -> float:
    """Images/s of ``workers`` threads at once, each looping over its own share of the photos (the
    sum of their rates; each counts whole batches over its own clock)."""
    _raw_worker(embedder, jpegs, batch, 0.0, [])  # one warm-up batch
    rates: list[float] = []
    threads = [
        threading.Thread(target=_raw_worker, args=(embedder, jpegs[w::workers], batch, seconds, rates))
        for w in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(rates)


def powers_of_two(cores: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``cores`` (at least 1, 2)."""
    return tuple(2**k for k in range(max(cores, 2).bit_length()) if 2**k <= max(cores, 2))


def grid_cells(
    cores: int, threads: list[int] | None = None, workers: list[int] | None = None
) -> list[tuple[int, int]]:
    """(threads, workers) pairs of the raw grid: those given, every pair of them; else the powers of
    two up to ``cores`` in the pairs that use from half to twice the cores (all four on 2 cores)."""
    if threads or workers:
        return [(t, w) for t in threads or powers_of_two(cores) for w in workers or powers_of_two(cores)]
    axis = powers_of_two(cores)
    return [(t, w) for t in axis for w in axis if cores / 2 <= t * w <= 2 * cores]


def raw_grid(
    models: AppArgs,
    jpegs: list[bytes],
    seconds: float,
    cells: list[tuple[int, int]],
    batches: tuple[int, ...] = GRID_BATCHES,
) -> list[dict]:
    """The grid on the served graph's runtime, one row per (threads, workers) cell and batch; the
    model is loaded once per thread count (a compiled runtime fixes its threads when it loads)."""
    from models.registry import load_classifier, load_embedder

    spec, rows = models.vision.model, []
    for threads in sorted({t for t, _ in cells}):
        torch.set_num_threads(threads)
        embedder = load_embedder(spec, models.text.model, classifier=load_classifier(spec))
        for batch in batches:
            for workers in sorted(w for t, w in cells if t == threads):
                rate = raw_cell(embedder, jpegs, batch=batch, workers=workers, seconds=seconds)
                rows.append(
                    {"batch": batch, "threads": threads, "workers": workers, "images_per_s": round(rate, 1)}
                )
                print(
                    f"raw  batch {batch:2d}  threads {threads:2d}  workers {workers:2d}  {rate:7.1f} img/s",
                    flush=True,
                )
    return rows


# ------------------------------------------------------------------------------------------- naive
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


def pid_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) so far of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def naive_sweep(
    pid: int, send: loadgen.Send, url: str, concurrency: list[int], window: float
) -> tuple[list, float]:
    """A sweep of the naive server and the cores its process used during it."""
    before, started = pid_cpu_seconds(pid), time.perf_counter()
    points = asyncio.run(loadgen.sweep(send, url, concurrency=concurrency, rates=[], window_s=window))
    return points, round((pid_cpu_seconds(pid) - before) / (time.perf_counter() - started), 3)


def run_naive(jpegs: list[bytes], texts: list[str], args) -> dict:
    port = free_port()
    text_path = json.loads(args.text_model).get("path")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.naive_server",
            "--port",
            str(port),
            *(["--text-path", text_path] if text_path else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{url}/healthz")
        image, image_cores = naive_sweep(
            proc.pid,
            loadgen.image_sender(IMAGE_ROUTE, jpegs),  # the naive server takes multipart only
            url,
            args.concurrency,
            args.window,
        )
        text, text_cores = naive_sweep(
            proc.pid, loadgen.text_sender(TEXT_ROUTE, texts), url, args.text_concurrency, args.window
        )
        return {"image": image, "text": text, "cores_used": {"image": image_cores, "text": text_cores}}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ------------------------------------------------------------------------------------------- served
def served_layout(cores: int) -> dict[str, float]:
    """Replicas and CPUs per replica of the served graph on ``cores``: one of each, the encoders with
    2 CPUs, up to 3 cores (the 2-core layout ``benchmarks.replica_layout`` measured); beyond, one
    gateway replica per 4 cores and one encoder replica of 4 CPUs per 8 cores."""
    if cores <= 3:
        return {
            "gateway_replicas": 1,
            "vision_replicas": 1,
            "vision_cpus": 2.0,
            "text_replicas": 1,
            "text_cpus": 2.0,
        }
    encoders = max(1, cores // 8)
    return {
        "gateway_replicas": max(1, cores // 4),
        "vision_replicas": encoders,
        "vision_cpus": 4.0,
        "text_replicas": encoders,
        "text_cpus": 4.0,
    }


def layout_of(args) -> dict[str, float]:
    """``served_layout`` of this machine, with what the command line set instead."""
    return {
        k: v if getattr(args, k) is None else getattr(args, k)
        for k, v in served_layout(os.cpu_count()).items()
    }


def served_args(args, transport: str | None = None) -> dict:
    layout = layout_of(args)
    # --transports: the cache off (every transport sends the same photos), the transport chosen
    settings = {} if transport is None else {"image_transport": transport, "embed_cache_size": 0}

    def fixed(replicas: float) -> dict:
        return {"min_replicas": int(replicas), "max_replicas": int(replicas)}

    return {
        "resource_guard": "off",
        "gateway": {"num_cpus": 0, "autoscaling": fixed(layout["gateway_replicas"]), "settings": settings},
        "vision": {
            "num_cpus": layout["vision_cpus"],
            "autoscaling": fixed(layout["vision_replicas"]),
            "model": json.loads(args.vision_model),
            "batch": {"max_batch_size": args.max_batch, "batch_wait_timeout_s": 0.01},
        },
        "text": {
            "num_cpus": layout["text_cpus"],
            "autoscaling": fixed(layout["text_replicas"]),
            "model": json.loads(args.text_model),
            "batch": {"max_batch_size": 32, "batch_wait_timeout_s": 0.005},
        },
        "audio": {"num_cpus": 0.1, "autoscaling": fixed(1), "model": json.loads(args.audio_model)},
        "search": {"enabled": False},
        "fusion": {"enabled": False},
    }


def ray_cpus(app: AppArgs) -> int:
    """Logical CPUs for the private Ray: 8 (as ever), or what the replicas ask for if more."""
    wanted = sum(d.num_cpus * d.autoscaling.max_replicas for d in app.deployments().values())
    return max(8, math.ceil(wanted))


def ray_processes() -> list[tuple[int, str, float]]:
    """(pid, name, CPU seconds so far) of each Ray process (by its title, ray::...; the raylet, the GCS,
    HAProxy) and of this one ("driver+loadgen")."""
    ticks, found = os.sysconf("SC_CLK_TCK"), []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="ignore")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        name = title.split(" ")[0].rsplit("/", 1)[-1]
        if proc.name == str(os.getpid()):
            name = "driver+loadgen"
        elif not title.startswith("ray::") and name not in ("raylet", "gcs_server", "haproxy"):
            continue
        if name.startswith("ray::"):  # a replica's title names the method it runs now: keep the actor only
            name = name.split(".", 1)[0]
        found.append((int(proc.name), name, (int(fields[11]) + int(fields[12])) / ticks))
    return found


def process_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of each Ray process, by its name, plus this one."""
    totals: dict[str, float] = {}
    for _, name, seconds in ray_processes():
        totals[name] = totals.get(name, 0.0) + seconds
    return totals


def cpu_profile(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores used by each process over the window (1.0 = one core busy all the time)."""
    used = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / seconds for k in after}
    return {k: round(v, 3) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0.005}


def replica_batch_stats(deployment: str, replicas: int = 1, probes: int = 64) -> list[dict]:
    """The batch counters of each of the deployment's ``replicas`` replicas (a handle reaches one per
    call: calls until every actor id has answered, at most ``probes`` per replica)."""
    from ray import serve

    handle, seen = serve.get_deployment_handle(deployment, app_name="bench"), {}
    # this driver calls it outside any event loop: its router needs a loop of its own, even where the
    # replicas run theirs on one loop (--ingress direct-1loop sets RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0)
    if not handle.is_initialized:  # Serve caches handles: only the first call initialises it
        handle._init(_run_router_in_separate_loop=True)
    for _ in range(probes * replicas):
        answer = handle.replica_batch_stats.remote().result()
        seen[answer["actor_id"]] = answer["sizes"]
        if len(seen) == replicas:
            return list(seen.values())
    raise RuntimeError(f"{deployment}: {len(seen)} of {replicas} replicas answered {probes * replicas} calls")


def merged_sizes(stats: list[dict]) -> dict[str, dict[str, int]]:
    """Batch-size counters of several replicas added up, per method."""
    out: dict[str, dict[str, int]] = {}
    for sizes in stats:
        for method, counts in sizes.items():
            mine = out.setdefault(method, {})
            for size, count in counts.items():
                mine[size] = mine.get(size, 0) + int(count)
    return out


def embedded_items(deployment: str, replicas: int = 1) -> int:
    """Items the deployment's ``embed`` batches held so far, over all its replicas (their own batch counters)."""
    sizes = merged_sizes(replica_batch_stats(deployment, replicas)).get("embed", {})
    return sum(int(size) * count for size, count in sizes.items())


def measured_sweep(
    deployment: str, send: loadgen.Send, url: str, concurrency: list[int], window: float, replicas: int = 1
) -> dict:
    """A sweep, the cores each process used during it, and how many items ``deployment``'s
    ``replicas`` replicas embedded against how many requests were answered."""
    tally, before_items = loadgen.Tally(send), embedded_items(deployment, replicas)
    before, started = process_cpu_seconds(), time.perf_counter()
    points = asyncio.run(loadgen.sweep(tally, url, concurrency=concurrency, rates=[], window_s=window))
    seconds = time.perf_counter() - started
    return {
        "points": points,
        "answered": tally.ok,
        "embedded": embedded_items(deployment, replicas) - before_items,
        "seconds": round(seconds, 2),
        "cores_used_by_process": cpu_profile(before, process_cpu_seconds(), seconds),
    }


def profiled_sweep(
    deployment: str,
    send: loadgen.Send,
    url: str,
    concurrency: list[int],
    window: float,
    replicas: int,
    out: Path,
) -> dict:
    """``measured_sweep`` while py-spy samples the gateway, proxy and encoder processes (``--profile``):
    an SVG and a top-20 self-time table per process into ``out``."""
    recordings = pyspy.start([(pid, name) for pid, name, _ in ray_processes()], out)
    try:
        sweep = measured_sweep(deployment, send, url, concurrency, window, replicas)
    finally:
        errors = pyspy.stop(recordings)
    rate = sweep["answered"] / sweep["seconds"]
    cpu_ms = {k: round(1000 * v / rate, 2) for k, v in sweep["cores_used_by_process"].items()}
    tables = pyspy.write(recordings, out, requests=sweep["answered"], cpu_ms=cpu_ms)
    return sweep | {"profile": tables, "profile_errors": errors, "profile_dir": str(out)}


def run_served(jpegs: list[bytes], texts: list[str], args) -> dict[str, dict]:
    from ray import serve

    from graphs import local_ray
    from graphs.app import build_app

    memory = (
        {} if args.object_store_gib is None else {"object_store_memory": int(args.object_store_gib * 2**30)}
    )
    env, receiver = tracing_cost.runtime_env(args.tracing_mode)
    context = local_ray.start(
        num_cpus=ray_cpus(AppArgs.model_validate(served_args(args))),
        log_to_driver=False,
        runtime_env=env,
        **memory,
    )
    port, mode = free_port(), args.ingress_mode or "proxy"
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(served_args(args)), name="bench", route_prefix="/")
        url = ingress_modes.ingress_url(mode, f"http://127.0.0.1:{port}", "bench")
        layout = layout_of(args)
        vision, text = int(layout["vision_replicas"]), int(layout["text_replicas"])
        out = {
            "image": measured_sweep(
                "VisionEncoder",
                loadgen.image_sender(IMAGE_ROUTE, jpegs, args.image_body),
                url,
                args.concurrency,
                args.window,
                vision,
            ),
            "cache_hits": measured_sweep(
                "VisionEncoder",
                loadgen.image_sender(IMAGE_ROUTE, [photo("chelsea")], args.image_body),
                url,
                [max(args.concurrency)],
                args.window,
                vision,
            ),
            "text": measured_sweep(
                "TextEncoder",
                loadgen.text_sender(TEXT_ROUTE, texts),
                url,
                args.text_concurrency,
                args.window,
                text,
            ),
        }
        if args.profile:
            out["image_profiled"] = profiled_sweep(
                "VisionEncoder",
                loadgen.image_sender(IMAGE_ROUTE, jpegs, args.image_body),
                url,
                [max(args.concurrency)],
                args.window,
                vision,
                args.out.with_name(f"{args.out.name}_profile"),
            )
        out["batch_sizes"] = {
            "VisionEncoder": merged_sizes(replica_batch_stats("VisionEncoder", vision)),
            "TextEncoder": merged_sizes(replica_batch_stats("TextEncoder", text)),
        }
        session = context.address_info.get("session_dir", "")
        out["ingress"] = {"mode": mode} | ingress_modes.checks(url, IMAGE_ROUTE, session, ray_processes())
        return out
    finally:
        serve.shutdown()  # flushes the replicas' span exporters
        local_ray.stop(context)
        out_tracing = tracing_cost.exported(receiver)
        if receiver is not None:
            receiver.__exit__()
            args.exported = out_tracing


def cpu_ms_per_image(sweep: dict) -> dict[str, float]:
    """CPU milliseconds per answered image of each process over a sweep (its cores over its rate)."""
    rate = sweep["answered"] / sweep["seconds"]
    return {
        k.replace("ray::ServeReplica:bench:", ""): round(1000 * v / rate, 2)
        for k, v in sweep["cores_used_by_process"].items()
    }


def run_transports(jpegs: list[bytes], args) -> list[dict]:
    """``--transports``: the image sweep once per transport (GatewaySettings.image_transport), the
    transports alternated round after round on one running graph (only the gateway is redeployed),
    so a noisy neighbour hits them alike. One row per (round, transport, concurrency)."""
    from ray import serve

    from graphs import local_ray
    from graphs.app import build_app

    context = local_ray.start(num_cpus=8, log_to_driver=False)
    port = free_port()
    url, rows = f"http://127.0.0.1:{port}", []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for rnd in range(args.rounds):
            for transport in args.transports:
                serve.run(build_app(served_args(args, transport)), name="bench", route_prefix="/")
                send = loadgen.image_sender(IMAGE_ROUTE, jpegs, args.image_body)
                measured_sweep("VisionEncoder", send, url, [4], 1.0)  # warm the new gateway
                for c in args.concurrency:
                    sweep = measured_sweep("VisionEncoder", send, url, [c], args.window)
                    point = sweep["points"][0]
                    rows.append(
                        {
                            "round": rnd,
                            "transport": transport,
                            "concurrency": c,
                            "answered": sweep["answered"],
                            "embedded": sweep["embedded"],
                            "images_per_s": round(point.throughput, 1),
                            "p50_ms": round(point.p50_ms, 1),
                            "p99_ms": round(point.p99_ms, 1),
                            "errors": point.errors,
                            "cpu_ms_per_image": cpu_ms_per_image(sweep),
                            "load_average": [round(x, 2) for x in os.getloadavg()],
                        }
                    )
                    r = rows[-1]
                    print(
                        f"round {rnd} {transport:6s} c={c:<3d} {r['images_per_s']:6.1f} img/s  "
                        f"p99 {r['p99_ms']:6.0f} ms"
                        f"  cpu ms/img {r['cpu_ms_per_image']}  load {r['load_average'][0]}",
                        flush=True,
                    )
        return rows
    finally:
        serve.shutdown()
        local_ray.stop(context)


def transport_summary(rows: list[dict]) -> dict:
    """Per transport and concurrency: the median, min and max over rounds of img/s and p99, and the
    median CPU ms per image of the gateway, the proxy and the model replica."""
    import statistics

    out: dict = {}
    for key in sorted({(r["transport"], r["concurrency"]) for r in rows}, key=lambda k: (k[1], k[0])):
        mine = [r for r in rows if (r["transport"], r["concurrency"]) == key]
        rates, p99s = [r["images_per_s"] for r in mine], [r["p99_ms"] for r in mine]
        cpu = {
            name: round(statistics.median(r["cpu_ms_per_image"].get(name, 0.0) for r in mine), 1)
            for name in ("Gateway", "ray::ProxyActor", "VisionEncoder")
        }
        out[f"{key[0]} c={key[1]}"] = {
            "images_per_s": statistics.median(rates),
            "images_per_s_range": [min(rates), max(rates)],
            "p99_ms": statistics.median(p99s),
            "p99_ms_range": [min(p99s), max(p99s)],
            "cpu_ms_per_image": cpu,
        }
    return out


def transport_guard(rows: list[dict]) -> list[str]:
    return [
        f"round {r['round']} {r['transport']} c={r['concurrency']}: {r['answered']} answered, "
        f"{r['embedded']} embedded"
        for r in rows
        if r["embedded"] < MIN_WORK * r["answered"]
    ]


def guard(served: dict, gateways: int = 1) -> list[str]:
    """What the served graph failed to do itself: a sweep whose deployment embedded fewer items than
    requests were answered measured something else (a cache, a stub), and the cache-hit line must
    not have reached the model beyond its first request (the sweep's warm-up). With several
    ``gateways`` (a cache each), a cold one may also miss what is in flight before its first
    embedding returns: at most the sweep's concurrency, once per other gateway."""
    failures = [
        f"{name}: {s['answered']} requests answered but the deployment embedded {s['embedded']} items"
        for name, s in served.items()
        if name in ("image", "text") and s["embedded"] < MIN_WORK * s["answered"]
    ]
    hits = served["cache_hits"]
    if hits["embedded"] > 1 + (gateways - 1) * int(max((p.load for p in hits.get("points", [])), default=1)):
        failures.append(
            f"cache_hits: the model embedded {hits['embedded']} items; the cache answered too few"
        )
    return failures


# ------------------------------------------------------------------------------------------- report
def at(points: list[loadgen.Point], load: int) -> loadgen.Point:
    return next(p for p in points if p.load == load)


def targets(best_raw: dict, naive: dict, served: dict, args) -> list[dict]:
    c, tc = max(args.concurrency), max(args.text_concurrency)
    s_img, n_img = at(served["image"]["points"], c), at(naive["image"], c)
    s_txt, n_txt = at(served["text"]["points"], tc), at(naive["text"], tc)
    rows = [
        (f"served image c={c} / naive c={c}", s_img.throughput / n_img.throughput, 2.0),
        (f"served image p99 / naive p99 at c={c} (no worse)", s_img.p99_ms / n_img.p99_ms, None),
        ("served image / honest ceiling (best raw cell)", s_img.throughput / best_raw["images_per_s"], 0.85),
        (f"served text c={tc} / naive c={tc}", s_txt.throughput / n_txt.throughput, 3.0),
    ]
    out = []
    for name, value, goal in rows:
        met = value <= 1.0 if goal is None else value >= goal
        out.append(
            {
                "target": name,
                "value": round(value, 3),
                "goal": "<= 1.0" if goal is None else f">= {goal}",
                "met": met,
            }
        )
    return out


def report(grid: list[dict], best: dict, naive: dict, served: dict, goals: list[dict], layout: dict) -> None:
    print(f"\nmachine: {os.cpu_count()} cores; honest ceiling = best raw cell {best}")
    print(f"served layout: {layout}; naive server's cores used: {naive['cores_used']}")
    rows = [
        ("naive image", naive["image"]),
        ("served image", served["image"]["points"]),
        ("served image, cache hits", served["cache_hits"]["points"]),
        ("naive text", naive["text"]),
        ("served text", served["text"]["points"]),
    ]
    for name, points in rows:
        for p in points:
            unit = "texts/s" if "text" in name else "img/s"
            print(
                f"{name:26s} c={p.load:<4g} {p.throughput:7.1f} {unit:7s} p50 {p.p50_ms:7.1f}  p99 {p.p99_ms:7.1f} ms"
                f"  errors {p.error_rate:.1%}"
            )
    for name in ("image", "cache_hits", "text"):
        s = served[name]
        print(
            f"{name}: answered {s['answered']}, embedded by the deployment {s['embedded']}; cores used: "
            f"{s['cores_used_by_process']}"
        )
    print("batch sizes:", {k: v.get("embed") for k, v in served["batch_sizes"].items()})
    for g in goals:
        print(
            f"target {g['target']:50s} {g['value']:6.2f} (goal {g['goal']}): {'met' if g['met'] else 'missed'}"
        )


def _plain(value):
    """``value`` with every load-generator point as a dict (for the JSON)."""
    if isinstance(value, loadgen.Point):
        return asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--grid-seconds", type=float, default=3.0, help="seconds per raw grid cell")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--text-concurrency", type=int, nargs="*", default=[1, 32])
    parser.add_argument(
        "--grid-threads", type=int, nargs="*", help="raw grid threads (default: from the cores)"
    )
    parser.add_argument(
        "--grid-workers", type=int, nargs="*", help="raw grid workers (default: from the cores)"
    )
    parser.add_argument("--grid-batches", type=int, nargs="*", default=list(GRID_BATCHES))
    layout = "(default: served_layout of this machine's cores)"
    parser.add_argument(
        "--vision-cpus",
        type=float,
        help=f"num_cpus of each VisionEncoder replica (Ray sets its intra-op threads from it) {layout}",
    )
    parser.add_argument("--text-cpus", type=float, help=f"num_cpus of each TextEncoder replica {layout}")
    parser.add_argument("--gateway-replicas", type=int, help=layout)
    parser.add_argument("--vision-replicas", type=int, help=layout)
    parser.add_argument("--text-replicas", type=int, help=layout)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument(
        "--object-store-gib",
        type=float,
        help="Ray's object store (default: Ray's share of the RAM; a VM with a small /dev/shm wants less)",
    )
    parser.add_argument(
        "--vision-model",
        default="{}",
        help="VisionModelSpec JSON for the served graph and the raw grid (the naive server stays fp32 torch)",
    )
    parser.add_argument(
        "--text-model",
        default="{}",
        help="TextModelSpec JSON for the served graph (its path also for the naive server)",
    )
    parser.add_argument(
        "--audio-model", default=AUDIO_MODEL, help="SpeechModelSpec JSON of the (idle) AudioModel"
    )
    parser.add_argument(
        "--transports",
        nargs="*",
        choices=["array", "draft", "input", "bytes"],
        help="instead of the whole benchmark: the served image sweep per image transport, "
        "alternated over --rounds (writes <out>.json)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--enlarge", type=int, default=1, help="--transports: photos this many times their size"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/image_throughput"))
    parser.add_argument(
        "--docs",
        action="store_true",
        help="after a run that passes its guard, regenerate "
        "docs/performance.md (python -m benchmarks.performance_page), which renders "
        "benchmarks/reference/image_throughput_*.json: give --out benchmarks/reference/<name>",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one more image sweep at the top concurrency with py-spy sampling the gateway, proxy and "
        "encoder processes: an SVG and a top-20 self-time table each into <out>_profile/",
    )
    parser.add_argument(
        "--served-only", action="store_true", help="only the served graph's sweeps (no raw grid, no naive)"
    )
    parser.add_argument(
        "--image-body",
        choices=("multipart", "raw"),
        default="multipart",
        help="how the served sweeps upload images: multipart file parts, or the octet-stream body",
    )
    parser.add_argument(
        "--ingress",
        nargs="*",
        choices=sorted(ingress_modes.MODES),
        help="instead of the whole benchmark: --served-only once per ingress mode, alternated over "
        "--rounds, each in its own process (writes <out>.json)",
    )
    parser.add_argument("--ingress-mode", choices=sorted(ingress_modes.MODES), help=argparse.SUPPRESS)
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="instead of the whole benchmark: --served-only with tracing off and at sampling 1.0, "
        "alternated over --rounds, each in its own process; prints the cost (benchmarks.tracing_cost)",
    )
    parser.add_argument("--tracing-mode", choices=tracing_cost.MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ingress:
        return ingress_main(args, sys.argv[1:] if argv is None else argv)
    if args.tracing:
        return tracing_cost.run(args, without_option(sys.argv[1:] if argv is None else argv, "--tracing"))
    if args.served_only:
        folder = ingress_modes.enter(args.ingress_mode) if args.ingress_mode else None
        try:
            return served_main(args)
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    if args.transports:  # the cache is off there: a few hundred photos are distinct enough
        return transports_main(distinct_photos(600, enlarge=args.enlarge), args)
    jpegs = distinct_photos(more_than_cache(GatewaySettings().embed_cache_size))
    texts = distinct_texts(20_000)
    models = AppArgs.model_validate(served_args(args))
    cells, layout = grid_cells(os.cpu_count(), args.grid_threads, args.grid_workers), layout_of(args)
    grid = raw_grid(models, jpegs[:512], args.grid_seconds, cells, tuple(args.grid_batches))
    best = max(grid, key=lambda r: r["images_per_s"])
    naive = run_naive(jpegs, texts, args)
    served = run_served(jpegs, texts, args)
    goals = targets(best, naive, served, args)
    report(grid, best, naive, served, goals, layout)
    failures = guard(served, int(layout["gateway_replicas"]))
    loadgen.write(
        {"naive": naive["image"], "mmserve": served["image"]["points"]},
        args.out,
        extra={
            "raw_grid": grid,
            "honest_ceiling": best,
            "naive_text": _plain(naive["text"]),
            "served": _plain(served),
            "naive_cores_used": naive["cores_used"],
            "served_layout": layout,
            "command": " ".join(sys.argv),
            "targets": goals,
            "guard_failures": failures,
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "vision_model": models.vision.model.model_dump(exclude_defaults=True),
            "text_model": models.text.model.model_dump(exclude_defaults=True),
            "audio_model": models.audio.model.model_dump(exclude_defaults=True),
        },
    )
    for failure in failures:
        print("GUARD FAILED:", failure)
    if args.docs and not failures:
        from benchmarks import performance_page

        performance_page.main([])
    return 1 if failures else 0


# ------------------------------------------------------------------------------------------- ingress
def cpu_table(served: dict) -> dict[str, dict]:
    """Per sweep (image, text): requests/s over the sweep and CPU ms per request of each process."""
    out = {}
    for name in ("image", "text"):
        sweep = served[name]
        out[name] = {
            "requests_per_s": round(sweep["answered"] / sweep["seconds"], 1),
            "cpu_ms_per_request": cpu_ms_per_image(sweep),
        }
    return out


def ingress_ms(cpu_ms: dict[str, float]) -> float:
    """CPU ms per request of the ingress hop: Serve's proxy, or HAProxy and its manager actor."""
    return round(sum(v for k, v in cpu_ms.items() if "proxy" in k.lower()), 2)


def served_main(args) -> int:
    """``--served-only``: the served graph's sweeps alone (in ``--ingress-mode``), its CPU per request
    and the ingress checks; writes <out>.json."""
    load_before = os.getloadavg()
    jpegs = distinct_photos(more_than_cache(GatewaySettings().embed_cache_size))
    served = run_served(jpegs, distinct_texts(20_000), args)
    table = cpu_table(served)
    for name in ("image", "text"):
        for p in served[name]["points"]:
            print(
                f"{name:5s} c={p.load:<4g} {p.throughput:7.1f}/s p50 {p.p50_ms:6.0f} p99 {p.p99_ms:6.0f} ms"
            )
        print(f"{name:5s} CPU ms per request: {table[name]['cpu_ms_per_request']}")
    print("ingress:", json.dumps(served["ingress"], indent=1))
    failures = guard(served, int(layout_of(args)["gateway_replicas"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "command": "python -m benchmarks.image_throughput " + " ".join(sys.argv[1:]),
        "ingress_mode": args.ingress_mode or "proxy",
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpu_ms_per_request": table,
        "served": _plain(served),
        "guard_failures": failures,
        "tracing": {"mode": args.tracing_mode or "off", **getattr(args, "exported", {})},
    }
    args.out.with_suffix(".json").write_text(json.dumps(body, indent=1))
    for failure in failures:
        print("GUARD FAILED:", failure)
    return 1 if failures else 0


def without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` less ``option`` and the values after it."""
    out, skipping = [], False
    for arg in argv:
        if arg == option:
            skipping = True
        elif skipping and arg.startswith("--"):
            skipping = False
        if not skipping:
            out.append(arg)
    return out


def ingress_main(args, argv: list[str]) -> int:
    """``--ingress``: the served sweeps once per ingress mode, alternated over ``--rounds``, each in its
    own process (Ray reads the modes' variables at start); a comparison into <out>.json."""
    child, runs, failed = without_option(argv, "--ingress"), [], 0
    for rnd in range(args.rounds):
        for mode in args.ingress:
            out = args.out.with_name(f"{args.out.name}_{mode}_r{rnd}")
            command = [sys.executable, "-m", "benchmarks.image_throughput", *child, "--served-only"]
            command += ["--ingress-mode", mode, "--out", str(out)]
            print(f"--- round {rnd} ingress {mode}: {' '.join(command[1:])}", flush=True)
            result = out.with_suffix(".json")
            result.unlink(missing_ok=True)  # a mode that fails must not leave an older run's figures
            rc = subprocess.run(command, check=False).returncode
            failed += rc != 0
            if result.exists():
                runs.append({"round": rnd, "rc": rc} | ingress_row(json.loads(result.read_text())))
    for row in runs:
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.image_throughput " + " ".join(argv)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "runs": runs}, indent=1))
    return 1 if failed else 0


def ingress_row(run: dict) -> dict:
    """One mode's figures: throughput and p99 at the top concurrency, CPU ms per request (the ingress hop,
    the gateway, all processes), and its checks."""
    served, table, checks = run["served"], run["cpu_ms_per_request"], run["served"]["ingress"]
    row = {"mode": run["ingress_mode"], "load_average": [round(x, 2) for x in run["load_average_after"]]}
    for name in ("image", "text"):
        top = served[name]["points"][-1]
        ms = table[name]["cpu_ms_per_request"]
        row[name] = {
            "c": top["load"],
            "per_s": round(top["throughput"], 1),
            "p99_ms": round(top["p99_ms"], 1),
            "errors": top["errors"],
            "cpu_ms_ingress": ingress_ms(ms),
            "cpu_ms_gateway": ms.get("Gateway", 0.0),
            "cpu_ms_all": round(sum(ms.values()), 1),
            "cpu_ms": ms,
        }
    row["checks"] = {k: checks[k] for k in ("url", "off_loopback", "proxy_callback_logged_in", "auth_mode")}
    row["checks"]["limits"] = {k: [v["status"], v["error_shape"]] for k, v in checks["limits"].items()}
    return row


def transports_main(jpegs: list[bytes], args) -> int:
    load_before = os.getloadavg()
    rows = run_transports(jpegs, args)
    summary, failures = transport_summary(rows), transport_guard(rows)
    for name, v in summary.items():
        print(
            f"{name:14s} {v['images_per_s']:6.1f} img/s {v['images_per_s_range']}  p99 {v['p99_ms']:6.0f} ms "
            f"{v['p99_ms_range']}  cpu ms/img {v['cpu_ms_per_image']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "command": "python -m benchmarks.image_throughput " + " ".join(sys.argv[1:]),
                "cpu_count": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "vision_model": json.loads(args.vision_model),
                "window_s": args.window,
                "photos": f"600 distinct crops of the test photos enlarged {args.enlarge}x",
                "summary": summary,
                "rows": rows,
                "guard_failures": failures,
            },
            indent=1,
        )
    )
    for failure in failures:
        print("GUARD FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
