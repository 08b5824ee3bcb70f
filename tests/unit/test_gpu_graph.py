"""benchmarks.gpu_graph's graph is a valid config that fits the node it starts (one GPU, shared by fractions)."""

from __future__ import annotations

import pytest

from benchmarks.gpu_graph import GPU_SHARES, graph_args
from config.args import AppArgs
from graphs import guard
from graphs.app import demands

PATHS = {"clip": "/ckpt/clip", "vit": "/ckpt/vit", "whisper": "/ckpt/whisper"}


@pytest.mark.parametrize("smoke, cpus", [(True, 4), (False, 14)])
def test_graph_fits_one_gpu(smoke: bool, cpus: int) -> None:
    args = AppArgs.model_validate(graph_args(PATHS, smoke, "bf16"))
    assert guard.problems(demands(args), [{"CPU": cpus, "GPU": 1}]) == []
    assert {name: getattr(args, name).num_gpus for name in GPU_SHARES} == GPU_SHARES
    assert not (args.search.enabled or args.fusion.enabled or args.vision_language.enabled)
    assert args.audio.model.engine == "transformers" and args.text.model.kind == "clip"


def test_batches_can_fill() -> None:
    """The image sweep's concurrency reaches the batch size: no admission limit refuses it first."""
    args = AppArgs.model_validate(graph_args(PATHS, False, "bf16"))
    settings = args.gateway.settings
    assert args.vision.batch.max_batch_size == 256 <= args.vision.max_ongoing_requests
    assert (
        min(settings.max_inflight, settings.inflight_budgets["image"], settings.max_requests_per_client)
        >= 256
    )
    assert settings.embed_cache_size == 0
