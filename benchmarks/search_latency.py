"""Query latency of models.search.VectorStore on a fresh Milvus Lite file vs numpy brute force.

    python -m benchmarks.search_latency [--n 10000 --dim 384 --queries 200 --top-k 10]

Builds an index of ``n`` random unit vectors in a temp dir, then times ``queries`` searches
(top-k, sequential, after warm-ups) through the store and, over the same matrix, a numpy
``argpartition`` brute force. Prints median / p95 of both and their ratio, the recall of the
store's top-k against numpy's, and writes benchmarks/results/search_latency.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.search import Item, VectorStore

RESULTS = Path(__file__).resolve().parent / "results" / "search_latency.json"


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def numpy_top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the k largest cosine similarities (rows and query are unit vectors)."""
    sims = matrix @ query
    top = np.argpartition(-sims, k)[:k]
    return top[np.argsort(-sims[top])]


def timed(
    fn: Callable[[np.ndarray], object], queries: np.ndarray, warmups: int = 5
) -> tuple[list[float], list]:
    """Per-query milliseconds of ``fn`` over ``queries`` (after warm-ups) and its results."""
    for query in queries[:warmups]:
        fn(query)
    times, results = [], []
    for query in queries:
        start = time.perf_counter()
        results.append(fn(query))
        times.append((time.perf_counter() - start) * 1000)
    return times, results


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
    }


def build(store: VectorStore, matrix: np.ndarray, batch: int) -> float:
    """Create the index and add ``matrix`` in batches; returns seconds taken."""
    store.create("bench", "latency", encoder="random", space="random", dim=matrix.shape[1])
    start = time.perf_counter()
    for lo in range(0, len(matrix), batch):
        rows = [
            Item(id=f"v{i}", vector=matrix[i], metadata={"shard": i % 10})
            for i in range(lo, min(lo + batch, len(matrix)))
        ]
        store.add("bench", "latency", rows, encoder="random")
    return time.perf_counter() - start


def run(*, n: int, dim: int, queries: int, top_k: int, batch: int) -> dict:
    matrix, probes = unit_rows(n, dim, seed=0), unit_rows(queries, dim, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        store = VectorStore(uri=str(Path(tmp) / "bench.db"))
        try:
            build_s = build(store, matrix, batch)
            milvus_ms, hits = timed(
                lambda q: store.search("bench", "latency", q, space="random", top_k=top_k), probes
            )
            filtered_ms, _ = timed(
                lambda q: store.search(
                    "bench", "latency", q, space="random", top_k=top_k, where={"shard": 3}
                ),
                probes[: max(queries // 4, 1)],
            )
        finally:
            store.close(release_file=True)
    numpy_ms, tops = timed(lambda q: numpy_top_k(matrix, q, top_k), probes)
    recall = np.mean(
        [len({h.id for h in hit} & {f"v{i}" for i in top}) / top_k for hit, top in zip(hits, tops)]
    )
    milvus, brute = summary(milvus_ms), summary(numpy_ms)
    return {
        "n": n,
        "dim": dim,
        "queries": queries,
        "top_k": top_k,
        "build_s": round(build_s, 2),
        "milvus_lite": milvus,
        "milvus_lite_filtered": summary(filtered_ms),
        "numpy": brute,
        "ratio_median": round(milvus["median_ms"] / brute["median_ms"], 1),
        "recall_at_k": round(float(recall), 4),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def report(result: dict) -> None:
    print(
        f"{result['n']} x {result['dim']}-d, top {result['top_k']}, {result['queries']} queries "
        f"(index built in {result['build_s']} s)"
    )
    for label in ("milvus_lite", "milvus_lite_filtered", "numpy"):
        print(
            f"  {label:22s} median {result[label]['median_ms']:8.2f} ms   p95 {result[label]['p95_ms']:8.2f} ms"
        )
    print(
        f"  milvus_lite / numpy (median): {result['ratio_median']}x   recall@{result['top_k']}: {result['recall_at_k']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1000, help="items per add() call while building")
    args = parser.parse_args()
    result = run(n=args.n, dim=args.dim, queries=args.queries, top_k=args.top_k, batch=args.batch)
    report(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
