"""The VisionEncoder's replica layout on this machine: replicas x num_cpus per replica (Ray sets a
replica's intra-op threads, OMP_NUM_THREADS, from its num_cpus), served image throughput at one
concurrency with distinct photos, one deployment after another in one Ray session.

    python -m benchmarks.replica_layout --layouts 1x1 1x2 2x1 --concurrency 16

Each layout is ``REPLICASxCPUS``. The evidence for serve_config.yaml's vision defaults.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks import image_throughput as bench
from benchmarks import loadgen
from benchmarks.inputs import distinct_photos, more_than_cache
from config.settings import GatewaySettings
from tests.assets import free_port


def layout_args(base: argparse.Namespace, replicas: int, cpus: float) -> dict:
    args = bench.served_args(base)
    args["vision"] |= {"num_cpus": cpus, "autoscaling": {"min_replicas": replicas, "max_replicas": replicas}}
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layouts", nargs="*", default=["1x1", "1x2", "2x1"])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/replica_layout.json"))
    args = parser.parse_args(argv)
    base = argparse.Namespace(
        vision_cpus=1.0,
        text_cpus=0.1,
        max_batch=args.max_batch,
        vision_model="{}",
        text_model="{}",
        audio_model=bench.AUDIO_MODEL,
        gateway_replicas=1,
        vision_replicas=1,
        text_replicas=1,
    )
    jpegs = distinct_photos(more_than_cache(GatewaySettings().embed_cache_size))
    from ray import serve

    from graphs import local_ray
    from graphs.app import build_app

    context, port, rows = local_ray.start(num_cpus=8, log_to_driver=False), free_port(), []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for layout in args.layouts:
            replicas, cpus = layout.split("x")
            serve.run(
                build_app(layout_args(base, int(replicas), float(cpus))), name="bench", route_prefix="/"
            )
            sweep = bench.measured_sweep(
                "VisionEncoder",
                loadgen.image_sender(bench.IMAGE_ROUTE, jpegs),
                f"http://127.0.0.1:{port}",
                [args.concurrency],
                args.window,
                int(replicas),
            )
            point = sweep["points"][0]
            rows.append(
                {
                    "layout": layout,
                    "images_per_s": round(point.throughput, 1),
                    "p99_ms": round(point.p99_ms),
                    "answered": sweep["answered"],
                    "embedded": sweep["embedded"],
                    "cores_used_by_process": sweep["cores_used_by_process"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        serve.shutdown()
        local_ray.stop(context)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "cpu_count": os.cpu_count(),
                "load_average_at_end": os.getloadavg(),
                "concurrency": args.concurrency,
                "rows": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
