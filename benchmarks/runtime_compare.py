"""The encoders on each CPU runtime, in-process: torch (TorchScript for EfficientNet-Lite0) against
ONNX Runtime and OpenVINO at fp32, bf16 (OpenVINO, where the CPU has it) and int8, with the accuracy
gates beside each speed: cosine >= 0.99 against fp32 torch on the test photos and sentences, and the
same ImageNet top-1 on every test photo.

    python -m benchmarks.runtime_compare --seconds 3 --out benchmarks/results/runtime_compare.json

Vision: ConSE over EfficientNet-Lite0, batches of 16 preprocessed photos (forward + ConSE head).
Text: all-MiniLM-L6-v2, batches of 32 distinct sentences (tokenise + forward + pooling). Prints one
row per runtime and precision, and the fastest that passes the gates per modality.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.inputs import distinct_texts
from benchmarks.timing import throughput
from models.media import decode_image
from models.registry import TextModelSpec, VisionModelSpec, load_classifier, load_embedder, load_text
from models.sample_photos import COLOUR_PHOTOS
from tests.assets import photo

CHOICES = [
    ("torch", "fp32"),
    ("torch", "bf16"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
]
GATE_COSINE = 0.99


def _vision(runtime: str, precision: str):
    spec = VisionModelSpec(runtime=runtime, precision=precision)
    classifier = load_classifier(spec)
    # the class-name embeddings come from the fp32 torch text encoder, so only the image path varies
    return classifier, load_embedder(
        spec, TextModelSpec(runtime="torch", precision="fp32"), classifier=classifier
    )


def measure(runtime: str, precision: str, seconds: float, reference: dict | None) -> dict:
    photos = [decode_image(photo(n)) for n in COLOUR_PHOTOS]  # the test photos, as JPEG uploads decode
    texts = distinct_texts(32)
    row: dict = {"runtime": runtime, "precision": precision}
    try:
        classifier, embedder = _vision(runtime, precision)
    except ValueError as exc:  # a precision this runtime or CPU cannot run
        return row | {"skipped": str(exc)}
    batch = torch.stack([embedder.preprocess(p) for p in photos])
    out = {"top1": classifier.probs(batch).argmax(1), "image": embedder.embed(batch)}
    sixteen = torch.cat([batch, batch, batch])[:16]
    row["vision_images_per_s"] = round(
        throughput(lambda: embedder.embed(sixteen), 16, seconds, warmups=3)[0], 1
    )
    try:
        text = load_text(TextModelSpec(runtime=runtime, precision=precision))
        out["text"] = text.embed(texts)
        row["text_per_s"] = round(throughput(lambda: text.embed(texts), 32, seconds, warmups=3)[0], 1)
    except ValueError as exc:
        row["text_skipped"] = str(exc)
    if reference is None:
        return row | {"_outputs": out}
    row["top1_same"] = bool(np.array_equal(out["top1"], reference["top1"]))
    row["image_cosine_min"] = round(float((out["image"] * reference["image"]).sum(1).min()), 4)
    row["vision_passes"] = row["top1_same"] and row["image_cosine_min"] >= GATE_COSINE
    if "text" in out:
        row["text_cosine_min"] = round(float((out["text"] * reference["text"]).sum(1).min()), 4)
        row["text_passes"] = row["text_cosine_min"] >= GATE_COSINE
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every runtime")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/runtime_compare.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reference = measure("torch", "fp32", args.seconds, None)
    outputs = reference.pop("_outputs")
    print(json.dumps(reference), flush=True)
    rows = [
        reference
        | {
            "top1_same": True,
            "image_cosine_min": 1.0,
            "vision_passes": True,
            "text_cosine_min": 1.0,
            "text_passes": True,
        }
    ]
    for runtime, precision in CHOICES[1:]:
        rows.append(measure(runtime, precision, args.seconds, outputs))
        print(json.dumps(rows[-1]), flush=True)
    best = {
        m: max((r for r in rows if r.get(f"{m}_passes")), key=lambda r: r[key])
        for m, key in (("vision", "vision_images_per_s"), ("text", "text_per_s"))
    }
    for m, r in best.items():
        print(f"fastest {m} runtime passing the gates: {r['runtime']} {r['precision']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "threads": args.threads,
                "rows": rows,
                "fastest_passing": {m: [r["runtime"], r["precision"]] for m, r in best.items()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
