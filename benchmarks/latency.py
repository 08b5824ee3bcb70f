"""Single-request latency per route against a running server (sequential, after one warm-up call).

    python -m benchmarks.latency --url http://127.0.0.1:8000 --repeat 10

Prints the median and p90 per route, and the memory (PSS) of the Ray processes on this host.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import httpx

from tests import assets


def _requests() -> dict[str, dict]:
    cat, wav = assets.photo("chelsea"), assets.speech(assets.EN_SENTENCE)
    labels = [("labels", (None, label)) for label in ("cat", "dog", "car", "coffee", "rocket")]
    return {
        "/v1/classify": {"files": {"image": ("cat.jpg", cat)}},
        "/v1/zero-shot": {"files": [("image", ("cat.jpg", cat)), *labels]},
        "/v1/embeddings/text": {"json": {"texts": ["a photo of a cat"]}},
        "/v1/embeddings/image": {"files": {"images": ("cat.jpg", cat)}},
        "/v1/embeddings/audio": {"files": {"audio": ("s.wav", wav)}},
        "/v1/retrieval": {
            "files": [("images", ("cat.jpg", cat)), ("texts", (None, "a cat")), ("texts", (None, "a car"))]
        },
        "/v1/audio/transcriptions": {"files": {"file": ("s.wav", wav)}},
        "/v1/audio/features": {"files": {"audio": ("s.wav", wav)}},
    }


def measure(client: httpx.Client, path: str, kwargs: dict, repeat: int) -> list[float]:
    client.post(path, **kwargs).raise_for_status()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        client.post(path, **kwargs).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return times


def ray_memory_mib() -> float:
    """Proportional set size (shared pages split fairly) of every Ray process on this host."""
    total_kib = 0
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            if "ray" not in cmd or "benchmarks.latency" in cmd:
                continue
            rollup = (proc / "smaps_rollup").read_text()
        except (OSError, ValueError):
            continue
        total_kib += next(
            (int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0
        )
    return total_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"idle memory of all Ray processes (PSS): {ray_memory_mib():.0f} MiB")
    with httpx.Client(base_url=args.url, timeout=300) as client:
        for path, kwargs in _requests().items():
            times = sorted(measure(client, path, kwargs, args.repeat))
            p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
            print(
                f"{path:28s} median {statistics.median(times):8.1f} ms   p90 {p90:8.1f} ms   (n={len(times)})"
            )


if __name__ == "__main__":
    main()
