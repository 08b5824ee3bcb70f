"""The graph on a real Ray session: batching, handles, placement and the resource guard."""

import asyncio
import time

import numpy as np
import pytest
import ray
from ray import serve

from graphs import guard
from graphs.app import build_app
from models.media import decode_audio, decode_image
from tests import assets
from tests.conftest import TEST_ARGS

pytestmark = pytest.mark.slow


def _handle(name: str, app: str = "mmserve"):
    return serve.get_deployment_handle(name, app_name=app)


def test_burst_forms_batches_larger_than_one(served):
    text = _handle("TextEncoder")

    async def burst():
        h = text.options(stream=False)
        return await asyncio.gather(*(h.embed.remote([f"sentence number {i}"]) for i in range(24)))

    rows = asyncio.run(burst())
    assert all(r.shape == (1, 384) for r in rows)
    sizes = text.batch_stats.remote().result()["embed"]
    assert max(int(k) for k in sizes) > 1, sizes


def test_batch_config_is_live(served):
    """reconfigure() (what Serve calls on a user_config change) resizes batches on the running replica."""
    text = _handle("TextEncoder")
    actor = text.info.remote().result().placement["actor_id"]
    text.reconfigure.remote({"max_batch_size": 4, "batch_wait_timeout_s": 0.05}).result()
    try:
        info = text.info.remote().result()
        assert info.placement["actor_id"] == actor and info.batch["max_batch_size"] == 4
        before = text.batch_stats.remote().result()["embed"]
        assert text.embed.remote([f"text {i}" for i in range(16)]).result().shape == (16, 384)
        after = text.batch_stats.remote().result()["embed"]
        new_sizes = {size for size, n in after.items() if n > before.get(size, 0)}
        assert new_sizes and max(new_sizes) <= 4, new_sizes
    finally:
        text.reconfigure.remote(TEST_ARGS["text"]["batch"]).result()


def test_vision_classify_and_embed_through_handles(served):
    vision = _handle("VisionEncoder")
    image = decode_image(assets.photo("chelsea"))
    top = vision.classify.remote(image, 5).result()
    assert any("cat" in p["label"] for p in top)
    emb = vision.embed.remote(image).result()
    assert emb.shape == (384,) and abs(np.linalg.norm(emb) - 1) < 1e-4


def test_audio_transcribe_through_handle(served):
    audio = _handle("AudioModel")
    result = audio.transcribe.remote(
        decode_audio(assets.speech(assets.EN_SENTENCE)), {"task": "transcribe"}
    ).result()
    assert assets.wer(assets.EN_SENTENCE, result["text"]) <= 0.3, result["text"]


def test_concurrent_short_transcriptions_are_batched(served):
    audio = _handle("AudioModel")
    clip = decode_audio(assets.speech("hello world, this is a batched request"))
    before = audio.batch_stats.remote().result().get("transcribe", {})

    async def burst():
        return await asyncio.gather(
            *(audio.transcribe.remote(clip, {"task": "transcribe"}) for _ in range(6))
        )

    results = asyncio.run(burst())
    assert all("hello" in r["text"].lower() for r in results), [r["text"] for r in results]
    after = audio.batch_stats.remote().result()["transcribe"]
    grown = {size for size, n in after.items() if n > before.get(size, 0)}
    assert max(grown) > 1, after


GPU_ARGS = {
    **TEST_ARGS,
    "vision": {**TEST_ARGS["vision"], "num_gpus": 0.25},
    "text": {**TEST_ARGS["text"], "num_gpus": 0.125},
    "audio": {**TEST_ARGS["audio"], "num_gpus": 0.5, "model": {"model": "whisper-tiny.en"}},
}


def test_fractional_gpu_placement(served):
    """One logical GPU, three modalities packed by fractions; CUDA is absent so models run on CPU."""
    assert ray.available_resources().get("GPU", 0.0) == 1.0
    serve.run(build_app(GPU_ARGS), name="gpu", route_prefix="/gpu")
    try:
        wanted = {"VisionEncoder": 0.25, "TextEncoder": 0.125, "AudioModel": 0.5}
        for name, fraction in wanted.items():
            info = _handle(name, "gpu").info.remote().result()
            assert info.placement["resources"].get("GPU") == fraction
            assert info.placement["gpu_ids"] == ["0"] and info.device == "cpu"
        cat = decode_image(assets.photo("chelsea"))
        assert "cat" in " ".join(
            p["label"] for p in _handle("VisionEncoder", "gpu").classify.remote(cat, 5).result()
        )
        speech = decode_audio(assets.speech(assets.EN_SENTENCE))
        text = _handle("AudioModel", "gpu").transcribe.remote(speech, {"task": "transcribe"}).result()["text"]
        assert assets.wer(assets.EN_SENTENCE, text) <= 0.3, text
        assert ray.available_resources().get("GPU", 0.0) == pytest.approx(1 - 0.875)  # Ray's own accounting
    finally:
        serve.delete("gpu")


@pytest.mark.parametrize(
    "override, names",
    [
        ({"vision": {"num_gpus": 2}}, ["VisionEncoder", "GPU"]),
        ({"text": {"resources": {"TPU": 1}}}, ["TextEncoder", "TPU"]),
        (
            {"audio": {"num_gpus": 0.5, "autoscaling": {"min_replicas": 3, "max_replicas": 3}}},
            ["AudioModel", "GPU"],
        ),
    ],
)
def test_unsatisfiable_resources_fail_fast(ray_cluster, override, names):
    started = time.monotonic()
    with pytest.raises(guard.UnschedulableError) as err:
        build_app({**TEST_ARGS, **{k: {**TEST_ARGS.get(k, {}), **v} for k, v in override.items()}})
    assert time.monotonic() - started < 5
    for name in names:
        assert name in str(err.value)
