"""Items/s and time per batch against batch size, per modality, in-process (the evidence behind each
deployment's ``batch.max_batch_size`` in ``serve_config.yaml``).

    python -m benchmarks.batch_sweep --seconds 2

A batch size is worth allowing while items/s still grows; past that, bigger batches only add
queueing latency (a request waits for the whole batch).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.timing import throughput
from models.media import decode_audio, decode_image
from models.registry import (
    SpeechModelSpec,
    TextModelSpec,
    VisionModelSpec,
    load_classifier,
    load_embedder,
    load_speech,
    load_text,
)
from tests import assets


def workloads() -> dict:
    text = load_text(TextModelSpec())
    sentences = [f"sentence number {i} about cats, coffee and rockets" for i in range(256)]
    embedder = load_embedder(
        VisionModelSpec(), TextModelSpec(), classifier=load_classifier(VisionModelSpec())
    )
    pixel = embedder.preprocess(decode_image(assets.photo("chelsea")))
    speech = load_speech(SpeechModelSpec(cpu_threads=2))
    clip = decode_audio(assets.speech(assets.EN_SENTENCE))
    return {
        "text": lambda n: text.embed(sentences[:n]),
        "vision": lambda n: embedder.embed(pixel[None].repeat(n, 1, 1, 1)),
        "audio_embed": lambda n: speech.embed([clip] * n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_sweep.json"))
    args = parser.parse_args()
    sizes = {"text": [1, 4, 8, 16, 32, 64], "vision": [1, 2, 4, 8, 16], "audio_embed": [1, 2, 4, 8]}
    result = {"torch_threads": torch.get_num_threads()}
    for name, fn in workloads().items():
        rows = []
        for n in sizes[name]:
            rate, ms = throughput(lambda: fn(n), n, args.seconds)
            rows.append({"batch": n, "items_per_s": round(rate, 1), "ms_per_batch": round(ms, 1)})
            print(name, rows[-1], flush=True)
        best = max(r["items_per_s"] for r in rows)
        result[name] = {
            "rows": rows,
            "smallest_batch_within_10pct_of_best": next(
                r["batch"] for r in rows if r["items_per_s"] >= 0.9 * best
            ),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: v["smallest_batch_within_10pct_of_best"] for k, v in result.items() if isinstance(v, dict)}
        )
    )


if __name__ == "__main__":
    main()
