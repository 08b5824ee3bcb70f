"""The served graph on one GPU, in one time-boxed run (issue 15, part 7).

    python -m benchmarks.gpu_graph --out gpu_graph.json    # on a CUDA machine (about 6 minutes)
    python -m benchmarks.gpu_graph --smoke --out x.json  # tiny models on CPU, a logical GPU: checks the script

Random weights (speed does not depend on their values), saved at run start and loaded through the
production loaders: CLIP ViT-B/32 (vision embedder, text kind clip), a ViT-B/16 classifier (the
VisionEncoder needs one; not measured) and Whisper base on the transformers engine, whose real
tokenizer comes from the packaged whisper-base (``--whisper-tokenizer``: the GPU machine has not
got that package, so its tokenizer.json travels in the carry bundle). Stages, each in its own
process under a time box (a stage that fails or overruns records its error and the run goes on):

- ``served``: the private local Ray (loopback, token auth) with one logical GPU, ``graphs.app:build_app``
  with the vision, text and audio deployments sharing it by fractions (resource guard strict);
  which replica processes ``nvidia-smi`` shows on the GPU; image embeddings over HTTP (distinct
  photos, cache off) at concurrency 64..256 with ``max_batch_size`` 256, checked against the
  VisionEncoder's batch counters; short text-embedding and transcription passes.
- ``raw``: the in-process ``CLIPImageEmbedder`` (same precision) at batch 64, 128, 256: the model
  alone on a ready tensor, and decode + preprocess + model as the served path does it.
- ``tower``: the ViT-B/32 image tower at batch 256 in bf16 (eager attention, SDPA, SDPA +
  torch.compile, + CUDA graphs) as a fraction of the bf16 peak: the datasheet's dense figure and an
  8192^3 bf16 matmul measured on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

STAGES = {"served": 170, "raw": 45, "tower": 120}  # seconds each stage may take on the GPU machine
BUDGET_S = 380  # the whole run, checkpoints included; a stage never gets more than what is left
APP = "bench"  # benchmarks.image_throughput reads batch counters of this app
GPU_SHARES = {"vision": 0.25, "text": 0.125, "audio": 0.5}  # as configs/gpu_cluster.yaml
IMAGE_CONCURRENCY, SMOKE_CONCURRENCY = [64, 128, 256], [4, 8]
RAW_BATCHES, SMOKE_BATCHES = [64, 128, 256], [2, 4]
TOWER_BATCH = 256


# ------------------------------------------------------------------------------------------- checkpoints
def build_checkpoints(tmp: Path, smoke: bool, whisper_tokenizer: Path | None) -> dict[str, str]:
    """Random CLIP, ViT and Whisper directories (tiny with ``smoke``), loadable by the production loaders."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from benchmarks.gpu_bench import _clip_dir
    from tests.checkpoints import WHISPER_BASE, WhisperDims, whisper_checkpoint

    vit = (
        ViTConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=10
        )
        if smoke
        else ViTConfig(num_labels=1000)
    )
    ViTForImageClassification(vit).save_pretrained(tmp / "vit")
    ViTImageProcessor().save_pretrained(tmp / "vit")
    whisper_checkpoint(
        tmp / "whisper", WhisperDims() if smoke else WHISPER_BASE, tokenizer_json=whisper_tokenizer
    )
    return {"clip": str(_clip_dir(tmp, smoke)), "vit": str(tmp / "vit"), "whisper": str(tmp / "whisper")}


# ------------------------------------------------------------------------------------------- served
def graph_args(paths: dict[str, str], smoke: bool, precision: str) -> dict:
    """The graph: vision, text and audio on one GPU by fractions; search, fusion, vision-language off."""
    fixed = {"min_replicas": 1, "max_replicas": 1}
    big = 8 if smoke else 256
    wide = {
        "max_inflight": 1000,
        "max_requests_per_client": 1024,
        "embed_cache_size": 0,
        "inflight_budgets": {"image": 1024, "text": 256, "audio": 32},
    }
    return {
        "resource_guard": "strict",
        "gateway": {
            "num_cpus": 1 if smoke else 2,
            "max_ongoing_requests": 1024,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1 if smoke else 2}
            | {"target_ongoing_requests": 512},
            "settings": wide,
        },
        "vision": {
            "num_cpus": 0.25 if smoke else 4,
            "num_gpus": GPU_SHARES["vision"],
            "autoscaling": fixed,
            "max_ongoing_requests": 2 * big,
            "model": {
                "classifier": "vit",
                "classifier_path": paths["vit"],
                "embedder": "clip",
                "embedder_path": paths["clip"],
                "precision": precision,
            },
            "batch": {"max_batch_size": big, "batch_wait_timeout_s": 0.02},
        },
        "text": {
            "num_cpus": 0.25 if smoke else 2,
            "num_gpus": GPU_SHARES["text"],
            "autoscaling": fixed,
            "max_ongoing_requests": 128,
            "model": {"kind": "clip", "path": paths["clip"], "precision": precision},
            "batch": {"max_batch_size": 64, "batch_wait_timeout_s": 0.005},
        },
        "audio": {
            "num_cpus": 0.25 if smoke else 2,
            "num_gpus": GPU_SHARES["audio"],
            "autoscaling": fixed,
            "model": {"engine": "transformers", "model": paths["whisper"]},
        },
        "search": {"enabled": False},
        "fusion": {"enabled": False},
        "vision_language": {"enabled": False},
    }


def gpu_processes() -> dict[int, int]:
    """pid -> MiB of GPU memory, of every process nvidia-smi shows on the GPU ({} without nvidia-smi)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    rows = [line.split(",") for line in out.strip().splitlines() if line.strip()]
    return {int(pid): int(mib) for pid, mib in rows}


def placement_report() -> dict:
    """Each model deployment's replica pids, whether nvidia-smi lists them, and what the replica says it
    runs on."""
    from ray import serve

    from tests.serve_state import replica_pids

    on_gpu, report = gpu_processes(), {}
    for name in ("VisionEncoder", "TextEncoder", "AudioModel"):
        info = serve.get_deployment_handle(name, app_name=APP).info.remote().result()
        pids = replica_pids(APP, name)
        report[name] = {
            "pids": pids,
            "on_gpu": [p in on_gpu for p in pids],
            "gpu_mib": [on_gpu.get(p) for p in pids],
            "device": info.device,
            "gpu_ids": info.placement["gpu_ids"],
            "resources": info.placement["resources"],
        }
    report["nvidia_smi"] = on_gpu
    return report


def transcription_pass(url: str, clips: list[bytes], concurrency: int) -> dict:
    """``clips`` transcribed through HTTP, ``concurrency`` at a time: status codes and seconds."""
    import httpx

    async def run() -> list[tuple[int, float]]:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:

            async def one(wav: bytes) -> tuple[int, float]:
                async with gate:
                    start = time.perf_counter()
                    r = await client.post(
                        "/v1/audio/transcriptions", files={"file": ("x.wav", wav)}, data={"language": "en"}
                    )
                    return r.status_code, time.perf_counter() - start

            return await asyncio.gather(*(one(w) for w in clips))

    start = time.perf_counter()
    results = asyncio.run(run())
    return {
        "statuses": [s for s, _ in results],
        "seconds": [round(t, 3) for _, t in results],
        "wall_s": round(time.perf_counter() - start, 3),
        "concurrency": concurrency,
    }


def stage_served(paths: dict[str, str], opts, out: dict) -> None:
    from ray import serve

    from benchmarks import loadgen
    from benchmarks.image_throughput import IMAGE_ROUTE, TEXT_ROUTE, guard, measured_sweep
    from benchmarks.inputs import distinct_photos, distinct_texts
    from graphs import local_ray
    from graphs.app import build_app
    from tests.assets import free_port, tone

    jpegs, texts = distinct_photos(64 if opts.smoke else 1024), distinct_texts(4096)
    clips = [tone(seconds) for seconds in (2.0, 3.0, 4.0, 5.0)]
    memory = {} if opts.smoke else {"object_store_memory": 2 * 2**30}  # /dev/shm may be small on a VM
    # The GPU machine's RAM grows as it is used, its MemTotal starting far lower: Ray's memory monitor
    # would read that as pressure and kill replicas. Off for this run (Ray reads it when it starts).
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    context = local_ray.start(num_cpus=4 if opts.smoke else 14, num_gpus=1, log_to_driver=False, **memory)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        started = time.perf_counter()
        serve.run(build_app(graph_args(paths, opts.smoke, opts.precision)), name=APP, route_prefix="/")
        out["deploy_s"] = round(time.perf_counter() - started, 1)
        out["placement"] = placement_report()
        window, conc = (1.0, SMOKE_CONCURRENCY) if opts.smoke else (opts.window, IMAGE_CONCURRENCY)
        out["image"] = measured_sweep(
            "VisionEncoder", loadgen.image_sender(IMAGE_ROUTE, jpegs), url, conc, window
        )
        out["text"] = measured_sweep("TextEncoder", loadgen.text_sender(TEXT_ROUTE, texts), url, [32], window)
        out["cache_hits"] = {
            "answered": 0,
            "embedded": 0,
        }  # the cache is off: image_throughput.guard reads this
        out["audio"] = transcription_pass(url, clips, concurrency=2)
        out["batch_sizes"] = {
            name: serve.get_deployment_handle(name, app_name=APP).batch_stats.remote().result()
            for name in ("VisionEncoder", "TextEncoder", "AudioModel")
        }
        out["guard_failures"] = guard(out)
        out["placement_after_load"] = placement_report()
    finally:
        serve.shutdown()
        local_ray.stop(context)


# ------------------------------------------------------------------------------------------- raw
def stage_raw(paths: dict[str, str], opts, out: dict) -> None:
    import torch

    from benchmarks.gpu_bench import _rate
    from benchmarks.image_throughput import raw_cell
    from benchmarks.inputs import distinct_photos
    from models.vision import CLIPImageEmbedder

    device = _device(opts)
    embedder = CLIPImageEmbedder.load(
        paths["clip"], model_id="clip-vit-b32-random", device=device, precision=opts.precision
    )
    jpegs = distinct_photos(64 if opts.smoke else 512)
    seconds, rows = (0.5 if opts.smoke else 3.0), []
    out["precision"] = opts.precision
    pixels = torch.stack([embedder.preprocess(_decoded(j)) for j in jpegs[:8]])
    for batch in SMOKE_BATCHES if opts.smoke else RAW_BATCHES:
        x = pixels.repeat(batch // 8 + 1, 1, 1, 1)[:batch].to(device)
        rows.append(
            {
                "batch": batch,
                "model_only_images_per_s": round(_rate(lambda: embedder.embed(x), batch, device, seconds), 1),
                "decode_preprocess_model_images_per_s": round(
                    raw_cell(embedder, jpegs, batch=batch, workers=1, seconds=seconds), 1
                ),
            }
        )
        out["rows"] = rows
        print("raw", rows[-1], flush=True)


def _decoded(jpeg: bytes):
    from models.media import decode_image

    return decode_image(jpeg)


# ------------------------------------------------------------------------------------------- tower
def matmul_tflops(device: str, n: int) -> float:
    """bf16 n x n x n matrix products per second on random data (METHOD.md's ceiling), in TFLOP/s."""
    import torch

    from benchmarks.gpu_bench import _rate

    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    return _rate(lambda: a @ b, 1, device, 1.0) * 2 * n**3 / 1e12


def tower_variants(path: str, device: str) -> dict:
    """name -> build(x): the image tower (bf16 weights, eval) for that variant, as a function that
    embeds the batch ``x``; cheapest first, so a time box cuts the slow compiles."""
    import torch
    from transformers import CLIPVisionModelWithProjection

    def model(attn: str):
        m = CLIPVisionModelWithProjection.from_pretrained(path, attn_implementation=attn)
        return m.to(device=device, dtype=torch.bfloat16).eval()

    def eager(attn: str):
        return lambda x: plain(model(attn), x)

    def plain(m, x):
        def forward():
            with torch.inference_mode():
                return m(pixel_values=x).image_embeds

        return forward

    def compiled(mode: str | None):
        return lambda x: plain(torch.compile(model("sdpa"), mode=mode), x)

    return {
        "eager attention": eager("eager"),
        "sdpa": eager("sdpa"),
        "sdpa + CUDA graph (captured by hand)": lambda x: cuda_graph(plain(model("sdpa"), x)),
        "sdpa + torch.compile": compiled(None),
        "sdpa + torch.compile reduce-overhead (CUDA graphs)": compiled("reduce-overhead"),
        "sdpa + torch.compile max-autotune-no-cudagraphs": compiled("max-autotune-no-cudagraphs"),
    }


def cuda_graph(forward):
    """``forward`` captured once as a CUDA graph; the returned function replays it (same input buffer)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("CUDA graphs need CUDA")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up on a side stream, as torch.cuda.graph's documentation asks
            forward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = forward()

    def replay():
        graph.replay()
        return out

    return replay


def stage_tower(paths: dict[str, str], opts, out: dict) -> None:
    import torch

    from benchmarks.gpu_bench import H100_BF16_DENSE_TFLOPS, _flops, _rate

    device = _device(opts)
    batch, seconds = (4, 0.3) if opts.smoke else (TOWER_BATCH, 2.0)
    measured_peak = matmul_tflops(device, 256 if opts.smoke else 8192)
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=torch.bfloat16)
    out.update(
        batch=batch,
        datasheet_bf16_dense_tflops=H100_BF16_DENSE_TFLOPS,
        measured_matmul_bf16_tflops=round(measured_peak, 1),
        variants=[],
    )
    per_image = None
    for name, build in tower_variants(paths["clip"], device).items():
        if time_left(opts) < (10 if name in ("eager attention", "sdpa") else 45):
            out["variants"] = out["variants"] + [{"variant": name, "skipped": "out of time"}]
            continue
        try:
            started = time.perf_counter()
            forward = build(x)
            forward()  # the first call compiles
            first_s = time.perf_counter() - started
            per_image = per_image or _flops(forward) / batch
            rate = _rate(forward, batch, device, seconds)
            tflops = rate * per_image / 1e12
            out["variants"].append(
                {
                    "variant": name,
                    "images_per_s": round(rate, 1),
                    "first_call_s": round(first_s, 1),
                    "tflops": round(tflops, 2),
                    "fraction_of_datasheet_peak": round(tflops / H100_BF16_DENSE_TFLOPS, 4),
                    "fraction_of_measured_matmul": round(tflops / measured_peak, 4),
                }
            )
        except Exception as exc:  # one variant failing (a compile error) must not end the stage
            out["variants"].append({"variant": name, "error": f"{type(exc).__name__}: {exc}"[:2000]})
        print("tower", out["variants"][-1], flush=True)
        out["flops_per_image"] = per_image
        forward = None
        torch._dynamo.reset()


# ------------------------------------------------------------------------------------------- driver
def _device(opts) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and not opts.smoke else "cpu"


class PartFile(dict):
    """A stage's result, written to ``path`` whenever a key is set: a stage killed at its time box
    (Ray may even abort the process on the way out) leaves what it had measured."""

    def __init__(self, path: str) -> None:
        super().__init__(ok=False)
        self.path, self.started = Path(path), time.perf_counter()

    def __setitem__(self, key: str, value) -> None:
        from benchmarks.image_throughput import _plain

        super().__setitem__(key, value)
        body = {**self, "stage_s": round(time.perf_counter() - self.started, 1)}
        self.path.write_text(json.dumps(_plain(body), indent=2, default=str))


def run_stage(stage: str, opts) -> None:
    """One stage in this process, its result (or error) in the JSON file ``opts.part``."""
    out = PartFile(opts.part)
    try:
        globals()[f"stage_{stage}"](json.loads(opts.paths), opts, out)
    except BaseException as exc:  # noqa: BLE001 -- recorded, and the driver goes on
        out["traceback"] = traceback.format_exc()[-4000:]
        out["error"] = f"{type(exc).__name__}: {exc}"
        return
    out["ok"] = True


def time_left(opts) -> float:
    return opts.deadline - time.monotonic() if opts.deadline else float("inf")


def spawn(stage: str, paths: dict, opts, box_s: float, tmp: Path) -> dict:
    """Run ``stage`` in a child process for at most ``box_s`` seconds (SIGTERM, then SIGKILL)."""
    part = tmp / f"{stage}.json"
    argv = [
        sys.executable,
        "-m",
        "benchmarks.gpu_graph",
        "--stage",
        stage,
        "--part",
        str(part),
        "--paths",
        json.dumps(paths),
        "--precision",
        opts.precision,
        "--window",
        str(opts.window),
        "--deadline",
        str(time.monotonic() + box_s),
    ] + (["--smoke"] if opts.smoke else [])
    print(f"== stage {stage} (time box {box_s:.0f} s)", flush=True)
    child, cut = subprocess.Popen(argv), False
    try:
        child.wait(timeout=box_s)
    except subprocess.TimeoutExpired:
        cut = True
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    result = json.loads(part.read_text()) if part.exists() else {"ok": False}
    if cut or not result.get("ok"):
        result.setdefault("error", f"exit code {child.returncode}")
        if cut:
            result["error"] = f"cut at its {box_s:.0f} s time box (partial results kept); {result['error']}"
    return result


def machine() -> dict:
    import torch
    import transformers

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError as exc:
        info["ray"] = f"missing: {exc}"
    return info


def summary(result: dict) -> None:
    print("\n== summary", json.dumps(result["machine"]))
    served = result.get("served", {})
    if served.get("ok"):
        for name, p in served["placement"].items():
            if name != "nvidia_smi":
                print(
                    f"{name:14s} pids {p['pids']} on GPU {p['on_gpu']} MiB {p['gpu_mib']} "
                    f"device {p['device']}"
                )
        for p in served["image"]["points"]:
            print(
                f"served image c={p['load']:<4g} {p['throughput']:8.1f} img/s  p50 {p['p50_ms']:7.1f}  "
                f"p99 {p['p99_ms']:7.1f} ms  errors {p['errors']}"
            )
        print("image batches:", served["batch_sizes"]["VisionEncoder"].get("embed"))
        for p in served["text"]["points"]:
            print(f"served text  c={p['load']:<4g} {p['throughput']:8.1f} texts/s p99 {p['p99_ms']:.1f} ms")
        print("transcriptions:", served["audio"]["statuses"], served["audio"]["seconds"], "s")
        print("guard failures:", served["guard_failures"] or "none")
    raw = result.get("raw", {})
    for row in raw.get("rows", []):
        print(
            f"raw batch {row['batch']:4d}  model only {row['model_only_images_per_s']:9.1f} img/s  "
            f"decode+preprocess+model {row['decode_preprocess_model_images_per_s']:8.1f} img/s"
        )
    tower = result.get("tower", {})
    if tower.get("variants") is not None:
        print(
            f"tower batch {tower['batch']}: matmul ceiling {tower['measured_matmul_bf16_tflops']} TFLOP/s, "
            f"datasheet {tower['datasheet_bf16_dense_tflops']}"
        )
        for v in tower["variants"]:
            print("  ", v)
    if "served_over_raw" in result:
        print("served / raw:", result["served_over_raw"])
    for stage in (s for s in STAGES if s in result):
        if not result[stage].get("ok"):
            print(f"stage {stage} FAILED: {result[stage].get('error')}")


def served_over_raw(result: dict) -> dict:
    """The best served image rate against the best raw rates (model only; decode + preprocess + model)."""
    points, rows = result.get("served", {}).get("image", {}).get("points"), result.get("raw", {}).get("rows")
    if not points or not rows:
        return {}
    served = max(p["throughput"] for p in points)
    return {
        "served_best_images_per_s": round(served, 1),
        "over_raw_model_only": round(served / max(r["model_only_images_per_s"] for r in rows), 4),
        "over_raw_decode_preprocess_model": round(
            served / max(r["decode_preprocess_model_images_per_s"] for r in rows), 4
        ),
    }


def save(result: dict, out: Path | None) -> None:
    if out:
        out.write_text(json.dumps(result, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny models on CPU with a logical GPU")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--window", type=float, default=2.5, help="seconds per load-generator window")
    parser.add_argument(
        "--whisper-tokenizer", type=Path, help="Whisper's tokenizer.json (default: the packaged one)"
    )
    parser.add_argument("--stages", nargs="*", default=list(STAGES), choices=list(STAGES))
    parser.add_argument(
        "--stage", choices=list(STAGES), help=argparse.SUPPRESS
    )  # internal: one stage, one child
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no load report per model (children inherit it)
    if opts.stage:
        run_stage(opts.stage, opts)
        return 0
    started = time.perf_counter()
    result: dict = {"machine": machine(), "smoke": opts.smoke, "gpu_shares": GPU_SHARES}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            paths = build_checkpoints(Path(tmp), opts.smoke, opts.whisper_tokenizer)
        except Exception as exc:  # noqa: BLE001 -- nothing else can run; record why
            result["checkpoints"] = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-4000:],
            }
            paths = None
        result["checkpoints_s"] = round(time.perf_counter() - started, 1)
        for stage in opts.stages if paths else []:
            left = BUDGET_S - (time.perf_counter() - started) - 5
            result[stage] = spawn(stage, paths, opts, max(min(STAGES[stage], left), 10), Path(tmp))
            save(result, opts.out)  # after each stage: a run killed later keeps what it measured
    result["served_over_raw"] = served_over_raw(result)
    result["total_s"] = round(time.perf_counter() - started, 1)
    save(result, opts.out)
    summary(result)
    return 0 if all(result.get(s, {}).get("ok") for s in opts.stages) else 1


if __name__ == "__main__":
    raise SystemExit(main())
