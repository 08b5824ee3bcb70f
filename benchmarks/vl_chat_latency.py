"""Request latency of ``/v1/chat/completions`` through the gateway and the VisionLanguage deployment.

    RAY_AUTH_MODE=disabled python -m benchmarks.vl_chat_latency [--requests 50] [--model-dir DIR --engine blip]

Starts a private local Ray, deploys the gateway (with stand-ins for the image, text and audio
deployments, which chat does not use) and VisionLanguage serving the test suite's tiny random BLIP
VQA checkpoint (or ``--model-dir``), and times sequential requests from the official ``openai``
client: non-streaming, and streaming to the ``[DONE]`` event. The tiny model makes this the serving
overhead (decode, Ray hops, batching wait, JSON/SSE) plus a few ms of model time.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
from pathlib import Path


def _percentiles(ms: list[float]) -> dict:
    ordered = sorted(ms)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=10)
    parser.add_argument(
        "--model-dir", type=Path, help="a BLIP or ViLT VQA checkpoint (default: tiny random BLIP)"
    )
    parser.add_argument("--engine", default="blip", choices=["blip", "vilt"])
    parser.add_argument(
        "--num-cpus", type=float, default=1.0, help="the VisionLanguage replica's CPUs (= torch threads)"
    )
    args = parser.parse_args()

    import openai
    import ray
    from ray import serve

    from deployments.gateway.ingress import Gateway
    from deployments.vision_language import VisionLanguage
    from graphs.launch import remove_session_dir
    from tests import assets, checkpoints
    from tests.assets import free_port
    from tests.stub_backends import StubModel

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model_dir or Path(tmp) / "tiny-blip-vqa"
        if args.model_dir is None:
            checkpoints.blip_checkpoint(path, "vqa")
        spec = {
            "id": "vqa",
            "task": "vqa",
            "engine": args.engine,
            "path": str(path),
            "max_tokens": args.max_tokens,
        }
        context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            stubs = [
                StubModel.options(name=f"Stub{m.title()}").bind(m, 0.0) for m in ("image", "text", "audio")
            ]
            vl = VisionLanguage.options(
                ray_actor_options={"num_cpus": args.num_cpus},
                user_config={"max_batch_size": 8, "batch_wait_timeout_s": 0.01},
            ).bind([spec], 1)
            serve.run(
                Gateway.options(ray_actor_options={"num_cpus": 0}).bind(*stubs, {}, vision_language=vl),
                name="bench",
                route_prefix="/",
            )
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
            url = "data:image/jpeg;base64," + base64.b64encode(assets.photo("coffee")).decode()
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is on the table?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ]
            call = dict(model="vqa", messages=messages, max_tokens=args.max_tokens)
            for _ in range(5):  # load and warm the model
                client.chat.completions.create(**call)
            plain, streamed = [], []
            for _ in range(args.requests):
                started = time.perf_counter()
                client.chat.completions.create(**call)
                plain.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                list(client.chat.completions.create(**call, stream=True))
                streamed.append((time.perf_counter() - started) * 1000)
            report = {
                "model": str(args.model_dir or "tiny random BLIP VQA"),
                "requests": args.requests,
                "image_bytes": len(assets.photo("coffee")),
                "replica_num_cpus": args.num_cpus,
                "non_streaming": _percentiles(plain),
                "streaming_to_done": _percentiles(streamed),
            }
            print(json.dumps(report, indent=2))
        finally:
            serve.shutdown()
            ray.shutdown()
            remove_session_dir(context)  # leave no Ray session data behind in /tmp/ray


if __name__ == "__main__":
    main()
