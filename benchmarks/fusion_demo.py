"""Fusion heads on the demo dataset: test accuracy of each head kind beside single-modality probes.

    python -m benchmarks.fusion_demo [--per-class 40] [--seeds 0 1 2]

Builds the demo dataset (clients/demo_data.py), extracts features once with the packaged encoders
(the ones serve_config.yaml runs), trains early, late and attention heads per seed and prints
held-out test accuracy side by side with a linear probe on each modality alone. Results go to
benchmarks/results/fusion_demo.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tools import demo_data
from tools import train_fusion as train

KINDS = ("early", "late", "attention")


def run(per_class: int, seeds: list[int], config: Path) -> dict:
    cfg = train.app_args(config)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = demo_data.build(Path(tmp) / "demo", seed=0, per_class=per_class)
        started = time.perf_counter()
        data = train.load_examples(manifest, cfg)
        extract_s = time.perf_counter() - started
        runs = [
            train.train_and_save(
                data,
                kind=kind,
                head_id=f"{kind}-{seed}",
                store=Path(tmp) / "heads",
                seed=seed,
                progress=False,
            )
            for seed in seeds
            for kind in KINDS
        ]
    return {"rows": len(data.examples), "feature_extraction_s": round(extract_s, 1), "runs": runs}


def summary(result: dict) -> list[str]:
    lines = [
        f"{result['rows']} rows, features in {result['feature_extraction_s']} s",
        f"{'head':10s} {'test acc (mean over seeds)':>28s}  best single modality  ratio",
    ]
    for kind in KINDS:
        runs = [r for r in result["runs"] if r["kind"] == kind]
        acc = statistics.mean(r["test_accuracy"] for r in runs)
        best = statistics.mean(max(r["single_modality_test_accuracy"].values()) for r in runs)
        lines.append(f"{kind:10s} {acc:28.3f}  {best:20.3f}  {acc / best:5.2f}")
    singles = result["runs"][0]["single_modality_test_accuracy"]
    lines.append(
        "single modalities (seed 0, rows that carry them): "
        + ", ".join(f"{m} {a:.3f}" for m, a in singles.items())
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", type=Path, default=Path("serve_config.yaml"))
    args = parser.parse_args()
    result = run(args.per_class, args.seeds, args.config)
    print("\n".join(summary(result)))
    out = Path("benchmarks/results/fusion_demo.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
