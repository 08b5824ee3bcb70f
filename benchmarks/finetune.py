"""The adapter fine-tune on Ray Train, measured: training samples/s with 1 and 2 workers, and
retrieval R@1/R@5 before (ConSE) and after, on train, on photo-held-out val and on the test photos.

Val and test photos are held out by photo (``models.adapter.SPLIT_RULE``); the residual heads start
as ConSE, the epoch best on val is kept (0 = ConSE itself) and the verdict says whether the kept
heads beat ConSE on val, which serving requires unless ``allow_worse_than_base: true``.

``python -m benchmarks.finetune [--data DIR] [--epochs 30] [--workers 1 2] [--num-cpus 2] [--json OUT]``

Builds the demo caption set in DIR when it has none (``tools.demo_captions``), computes its frozen
features once (cached in DIR/cache, so both runs train on the same features), then runs
``tools.finetune.finetune`` once per worker count on a private local Ray. samples/s is the median
over epochs after the first of (pairs stepped by all workers) / (epoch wall time): the heads only,
features are not recomputed. Figures on a 2-core machine shared with other work say little about
scaling; they say what one run costs here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from models import adapter, registry
from tools import demo_captions
from tools.finetune import FINGERPRINT, finetune


def prepare(data: Path) -> Path:
    manifest = data / demo_captions.CAPTIONS_FILE
    if not manifest.is_file():
        demo_captions.build(data)
    pairs = adapter.read_manifest(manifest)
    encoders: list = []

    def load():
        if not encoders:
            encoders.append(registry.load_frozen_encoders())
        return encoders[0]

    for split in adapter.SPLITS:
        adapter.cached_features(
            pairs, split, encoders_fn=load, cache_dir=data / "cache", fingerprint=FINGERPRINT
        )
    return manifest


def one_run(manifest: Path, data: Path, workers: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="mmserve-ft-bench-") as tmp:
        started = time.perf_counter()
        meta = finetune(
            manifest,
            Path(tmp) / f"ckpt-{workers}w",
            workers=workers,
            cache_dir=data / "cache",
            storage=Path(tmp) / "runs",
            train=adapter.TrainConfig(epochs=epochs),
            encoders_fn=_no_encoders,
            log=lambda _: None,
        )
        wall = time.perf_counter() - started
    rates = [r["samples"] / r["epoch_s"] for r in meta["history"][1:] if r["epoch_s"] > 0]
    return {
        "workers": workers,
        "epochs": len(meta["history"]),
        "wall_s": round(wall, 1),
        "samples_per_epoch": meta["history"][-1]["samples"],
        "samples_per_s": round(statistics.median(rates), 1) if rates else None,
        "final_loss": round(meta["history"][-1]["loss"], 4),
        "metrics": meta["metrics"],
        "promotion": meta["promotion"],
    }


def _no_encoders():
    raise RuntimeError("features should come from the cache that prepare() filled")


def _fmt(m: dict) -> str:
    return " ".join(f"{k} {m[k]:.2f}" for k in ("t2i_r1", "t2i_r5", "t2i_mrr", "i2t_r1", "i2t_r5"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.finetune", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=Path("/tmp/mmserve-demo-captions"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    manifest = prepare(args.data)
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    context = ray.init(
        num_cpus=args.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False
    )
    try:
        runs = [one_run(manifest, args.data, w, args.epochs) for w in args.workers]
    finally:
        ray.shutdown()
        import shutil

        shutil.rmtree(context.address_info.get("session_dir") or "/nonexistent", ignore_errors=True)
    for r in runs:
        print(
            f"{r['workers']} worker(s): {r['samples_per_s']} samples/s ({r['samples_per_epoch']} "
            f"pairs/epoch, {r['epochs']} epochs, {r['wall_s']} s wall incl. Ray Train start), "
            f"final loss {r['final_loss']}"
        )
        for split, m in r["metrics"].items():
            print(f"  {split:>5} before (ConSE): {_fmt(m['before'])}")
            print(f"  {split:>5} after (adapter): {_fmt(m['after'])}")
        v = r["promotion"]
        print(
            f"  kept epoch {v['kept_epoch']} (0 = ConSE); beats ConSE on photo-held-out val: {v['beats_base']}"
        )
    print(f"command: python -m benchmarks.finetune {' '.join(sys.argv[1:])}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "argv": sys.argv[1:]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
