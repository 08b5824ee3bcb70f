"""GPU throughput of full-size architectures with random weights (speed does not depend on weight values).

    python -m benchmarks.gpu_bench --out results.json          # on a CUDA machine
    python -m benchmarks.gpu_bench --smoke                     # tiny configs, CPU: checks the script runs

- CLIP ViT-B/32 image tower through mmserve's own ``CLIPImageEmbedder`` (saved, reloaded through the
  production loader, preprocessed by its image processor): images/s per batch size and precision,
  achieved TFLOP/s (FLOPs counted by torch's FlopCounterMode) and the fraction of a bf16 peak.
- Whisper base encoder (the audio-embedding path) and the CLIP text tower (random token ids).
- Packing: the three run at once on one GPU, as fractional Ray replicas would, against each alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import throughput

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA's datasheet figure for H100 SXM (dense, no sparsity)


def _clip_dir(tmp: Path, smoke: bool) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = (
        CLIPConfig()
        if not smoke
        else CLIPConfig(
            text_config={
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "projection_dim": 16,
            },
            vision_config={
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "image_size": 224,
                "patch_size": 32,
                "projection_dim": 16,
            },
            projection_dim=16,
        )
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(tmp / "clip")
    CLIPImageProcessor().save_pretrained(tmp / "clip")
    return tmp / "clip"


def _rate(fn, items: int, device: str, seconds: float) -> float:
    """Items per second of ``fn`` (two warm-up calls; CUDA synchronised around the timed loop)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return throughput(fn, items, seconds, warmups=2, sync=sync)[0]


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def bench_clip_images(path: Path, device: str, batches: list[int], seconds: float) -> list[dict]:
    from models.vision import CLIPImageEmbedder

    rows = []
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for precision in ("fp32", "fp16", "bf16"):
        embedder = CLIPImageEmbedder.load(
            path, model_id="clip-vit-b32-random", device=device, precision=precision
        )
        pixel = embedder.preprocess(image)
        start = time.perf_counter()
        for _ in range(32):
            embedder.preprocess(image)
        preprocess_ms = (time.perf_counter() - start) / 32 * 1000
        per_image = (
            _flops(lambda: embedder.embed(pixel[None])) if precision == "fp32" else rows[0]["flops_per_image"]
        )
        for batch in batches:
            x = pixel[None].repeat(batch, 1, 1, 1).to(device)
            rate = _rate(lambda: embedder.embed(x), batch, device, seconds)
            tflops = rate * per_image / 1e12
            rows.append(
                {
                    "model": "clip-vit-b32 image",
                    "precision": precision,
                    "batch": batch,
                    "items_per_s": round(rate, 1),
                    "flops_per_image": per_image,
                    "tflops": round(tflops, 2),
                    "fraction_of_bf16_peak": round(tflops / H100_BF16_DENSE_TFLOPS, 4),
                    "cpu_preprocess_ms_per_image": round(preprocess_ms, 2),
                }
            )
            print(rows[-1], flush=True)
    return rows


def _whisper_encoder(device: str, smoke: bool):
    from transformers import WhisperConfig, WhisperModel

    size = (32, 1, 2, 64) if smoke else (512, 6, 8, 2048)  # d_model, layers, heads, ffn: Whisper base
    d_model, layers, heads, ffn = size
    config = WhisperConfig(
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        num_mel_bins=80,
        vocab_size=51865,
    )
    return WhisperModel(config).get_encoder().to(device).eval()


def _clip_text(path: Path, device: str):
    from transformers import CLIPTextModelWithProjection

    return CLIPTextModelWithProjection.from_pretrained(str(path)).to(device).eval()


def workloads(path: Path, device: str, smoke: bool, dtype: torch.dtype) -> dict:
    """name -> (callable, items per call); each runs under autocast like the backends do."""
    from models.vision import CLIPImageEmbedder

    vision = CLIPImageEmbedder.load(
        path, model_id="clip", device=device, precision="bf16" if device == "cuda" else "fp32"
    )
    pixels = torch.randn(64, 3, 224, 224, device=device)
    text = _clip_text(path, device)
    ids = torch.randint(0, text.config.vocab_size, (128, 16), device=device)
    audio = _whisper_encoder(device, smoke)
    mels = torch.randn(16, 80, 3000, device=device)

    def run(model, **kwargs):
        with (
            torch.inference_mode(),
            torch.autocast(device_type=device, dtype=dtype, enabled=device == "cuda"),
        ):
            return model(**kwargs)

    return {
        "vision": (lambda: vision.embed(pixels), 64),
        "text": (lambda: run(text, input_ids=ids), 128),
        "audio": (lambda: run(audio, input_features=mels), 16),
    }


def bench_packing(jobs: dict, device: str, seconds: float) -> dict:
    alone = {name: _rate(fn, n, device, seconds) for name, (fn, n) in jobs.items()}
    packed: dict[str, float] = {}

    def worker(name: str) -> None:
        fn, n = jobs[name]
        stream = torch.cuda.Stream() if device == "cuda" else None
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            packed[name] = _rate(fn, n, device, seconds)

    threads = [threading.Thread(target=worker, args=(name,)) for name in jobs]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return {
        name: {
            "alone_items_per_s": round(alone[name], 1),
            "packed_items_per_s": round(packed[name], 1),
            "packed_over_alone": round(packed[name] / alone[name], 3),
        }
        for name in jobs
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny configs on CPU: only checks that it runs")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = _clip_dir(Path(tmp), args.smoke)
        batches = [1, 8] if args.smoke else [1, 8, 32, 128, 256]
        result["clip_images"] = bench_clip_images(path, device, batches, 0.5 if args.smoke else args.seconds)
        jobs = workloads(path, device, args.smoke, torch.bfloat16)
        result["packing"] = bench_packing(jobs, device, 0.5 if args.smoke else args.seconds)
    print(json.dumps(result["packing"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
