"""Bulk image embedding through the Batch API's pipeline against the in-process ceiling, side by side
in one run on this machine, on distinct photos (no cache can help either side):

(a) ceiling: ``image_throughput``'s raw grid (decode + preprocess + forward in this process, no Ray, no
    HTTP) over the machine's cells; the best cell;
(b) bulk: the same photos as a JSONL of ``/v1/embeddings/image`` lines (base64, as the API takes them)
    run by the batch runner's ``run`` in this process, on a local Ray: Ray Data prepare tasks, a
    ``ModelWorker`` actor pool of ``--actors`` x ``--cpus``, block commits to the store. No HTTP on the
    path. Reported: wall time from start to completed (pool start and model load included) and the
    steady rate between the first and the last committed block.

    python -m benchmarks.bulk --images 2000 --actors 1 --cpus 2 --out benchmarks/results/bulk.json

A guard fails the run (exit 1) unless every line landed once in the output file.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.image_throughput import grid_cells, raw_grid
from benchmarks.inputs import distinct_photos
from config.args import AppArgs


def _lines(jpegs: list[bytes]) -> bytes:
    rows = (
        {
            "custom_id": f"img{i}",
            "method": "POST",
            "url": "/v1/embeddings/image",
            "body": {"images": [base64.b64encode(j).decode()]},
        }
        for i, j in enumerate(jpegs)
    )
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def bulk(
    models: AppArgs, jpegs: list[bytes], *, actors: int, cpus: float, batch_size: int, block: int
) -> dict:
    from api.batch import BatchObject
    from deployments.batch import runner
    from deployments.batch.store import Store, new_id
    from deployments.batch.work import Plan
    from deployments.gateway.errors import statuses_by_class
    from models.media import MediaLimits

    store_dir = tempfile.mkdtemp(prefix="mmserve-bulk-")
    store = Store(store_dir)
    source = store.add_file("bench", "in.jsonl", [_lines(jpegs)], max_bytes=1 << 40, max_lines=1 << 40)
    batch = BatchObject(
        id=new_id("batch_"),
        endpoint="/v1/embeddings/image",
        input_file_id=source.id,
        status="validating",
        created_at=0,
    )
    store.save_batch("bench", batch)
    plan = Plan(
        tenant="bench",
        batch_id=batch.id,
        endpoint=batch.endpoint,
        store=store_dir,
        block_size=block,
        pool={"max_actors": actors, "num_cpus": cpus, "num_gpus": 0.0, "batch_size": batch_size},
        vision_spec=models.vision.model.model_dump(),
        text_spec=models.text.model.model_dump(),
        limits=MediaLimits(),
        embedders={},
        infos={"image": {"model": "bench", "space": "bench", "task_model": "bench"}},
        statuses=statuses_by_class(),
    )
    started = time.perf_counter()
    done = runner.run(plan)
    wall = time.perf_counter() - started
    blocks = sorted((Path(store_dir) / "bench" / "batches" / batch.id / "blocks").glob("*.jsonl"))
    times = [p.stat().st_mtime for p in blocks]
    after_first = sum(len(p.read_bytes().splitlines()) for p in blocks[1:])
    out = {
        json.loads(x)["custom_id"] for x in b"".join(store.content("bench", done.output_file_id)).splitlines()
    }
    return {
        "status": done.status,
        "completed": done.request_counts.completed,
        "unique_in_output": len(out),
        "wall_s": round(wall, 1),
        "images_per_s_wall": round(len(jpegs) / wall, 1),
        "images_per_s_steady": round(after_first / (times[-1] - times[0]), 1) if len(times) > 1 else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--actors", type=int, default=1)
    # leave the prepare tasks room: a pool that needs every CPU of the local Ray never starts (seen: 2 of 2)
    ap.add_argument("--cpus", type=float, default=max(0.5, (os.cpu_count() or 2) - 0.5))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--window", type=float, default=3.0, help="seconds per cell of the raw grid")
    ap.add_argument("--out", type=Path)
    opts = ap.parse_args()
    models = AppArgs()
    jpegs = distinct_photos(opts.images)
    cores = os.cpu_count() or 2
    grid = raw_grid(models, jpegs, opts.window, grid_cells(cores), batches=(opts.batch_size,))
    ceiling = max(r["images_per_s"] for r in grid)

    from graphs import local_ray

    context = local_ray.start(num_cpus=cores, log_to_driver=False)
    try:
        result = bulk(
            models, jpegs, actors=opts.actors, cpus=opts.cpus, batch_size=opts.batch_size, block=opts.block
        )
    finally:
        local_ray.stop(context)
    steady = result["images_per_s_steady"] or result["images_per_s_wall"]
    report = {
        "images": opts.images,
        "cores": cores,
        "ceiling_images_per_s": ceiling,
        "grid": grid,
        "bulk": result,
        "steady_over_ceiling": round(steady / ceiling, 2),
        "wall_over_ceiling": round(result["images_per_s_wall"] / ceiling, 2),
    }
    print(json.dumps({k: v for k, v in report.items() if k != "grid"}, indent=1))
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(report, indent=1))
    exact = (
        result["status"] == "completed" and result["completed"] == result["unique_in_output"] == opts.images
    )
    if not exact:
        print("FAILED: not every image landed once in the output file")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
