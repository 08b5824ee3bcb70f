"""tools.finetune on the session's local Ray (tests/conftest.py ray_cluster): 2 DDP workers on the demo
caption set (features cached first).
The CLIP family is plumbing only: a tiny *random* CLIP (tests/checkpoints.py) trains a few steps through the
same trainer; nothing is claimed about the quality of a CLIP fine-tune (no CLIP weights offline)."""

import math
import shutil

import pytest
import torch

from models import adapter, registry
from tests import checkpoints
from tools import demo_captions, finetune

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def caption_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    return root, demo_captions.build(root)


@pytest.fixture(scope="module")
def caption_set(caption_manifest):
    root, manifest = caption_manifest
    encoders = registry.load_frozen_encoders()  # features cached before Ray starts
    pairs = adapter.read_manifest(manifest)
    for split in adapter.SPLITS:
        adapter.cached_features(
            pairs,
            split,
            encoders_fn=lambda: encoders,
            cache_dir=root / "cache",
            fingerprint=finetune.FINGERPRINT,
        )
    return root, manifest


def test_two_workers_train_keep_the_best_val_epoch_and_record_the_verdict(caption_set, ray_cluster, tmp_path):
    """The heads kept are those of the best epoch on photo-held-out val (epoch 0 = ConSE itself), so
    they are never below ConSE there; train, val and test figures, the split rule and the promotion
    verdict are in the checkpoint's metadata."""
    root, manifest = caption_set
    meta = finetune.finetune(
        manifest,
        tmp_path / "ckpt",
        workers=2,
        cache_dir=root / "cache",
        storage=tmp_path / "runs",
        train=adapter.TrainConfig(epochs=8, batch_size=32, patience=0),
    )
    losses = [r["loss"] for r in meta["history"]]
    assert len(losses) == 8 and losses[-1] < losses[0], losses
    assert set(meta["metrics"]) == {"train", "val", "test"}
    val, verdict = meta["metrics"]["val"], meta["promotion"]
    assert adapter.selection_score(val["after"]) >= adapter.selection_score(val["before"]), val
    assert verdict["kept_epoch"] == meta["history"][-1]["best_epoch"]
    assert verdict["beats_base"] == (verdict["kept_epoch"] > 0), verdict
    assert meta["training"]["split_rule"] == adapter.SPLIT_RULE
    assert adapter.read_meta(tmp_path / "ckpt")["promotion"] == verdict
    assert adapter.adapter_space(tmp_path / "ckpt") == meta["space"] and meta["resumed_from"] is None
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)


def test_a_worker_killed_mid_run_resumes_from_the_last_checkpoint(caption_set, ray_cluster, tmp_path):
    root, manifest = caption_set
    meta = finetune.finetune(
        manifest,
        tmp_path / "ckpt",
        workers=2,
        cache_dir=root / "cache",
        storage=tmp_path / "runs",
        train=adapter.TrainConfig(epochs=5, batch_size=32),
        fail_at_epoch=2,
    )
    assert meta["resumed_from"] is not None and meta["resumed_from"] <= 2, meta["history"]
    assert [r["epoch"] for r in meta["history"]] == list(range(5))  # resumed, not restarted from epoch 0
    assert (tmp_path / "ckpt" / adapter.WEIGHTS_FILE).is_file()
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-clip-base")
    model, _ = checkpoints.clip_checkpoint(path)
    return path, model


def _clip_finetune(caption_manifest, tiny_clip, tmp_path, *, lock_image: bool):
    _, manifest = caption_manifest
    meta = finetune.finetune(
        manifest,
        tmp_path / "clip",
        workers=2,
        storage=tmp_path / "runs",
        family="clip",
        base=str(tiny_clip[0]),
        lock_image=lock_image,
        train=adapter.TrainConfig(epochs=2, batch_size=32),
    )
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
    return meta, tmp_path / "clip"


VISION, TEXT = ("vision_model.", "visual_projection."), ("text_model.", "text_projection.")


def _params(model, prefixes: tuple[str, ...]) -> dict:
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}


def test_a_tiny_random_clip_trains_through_the_same_trainer_and_loads_as_a_clip(
    caption_manifest, tiny_clip, ray_cluster, tmp_path
):
    from transformers import CLIPModel

    from models.media import decode_image
    from models.registry import TextModelSpec, VisionModelSpec, load_embedder, load_text

    meta, out = _clip_finetune(caption_manifest, tiny_clip, tmp_path, lock_image=False)
    history = meta["history"]
    assert len(history) == 2 and all(math.isfinite(r["loss"]) and r["steps"] >= 2 for r in history), history
    assert set(meta["metrics"]["val"]) == {"before", "after"} and "t2i_r1" in meta["metrics"]["val"]["after"]
    assert meta["base"]["model"] == str(tiny_clip[0]) and meta["base"]["versions"]["transformers"]
    # the production CLIP loaders: both towers from the saved directory, one space, one dimension
    text_spec = TextModelSpec(kind="clip", path=str(out))
    text = load_text(text_spec)
    image = load_embedder(
        VisionModelSpec(embedder="clip", embedder_path=str(out)), text_spec, classifier=None
    )
    photo = decode_image(next((caption_manifest[0] / "images").rglob("*.jpg")).read_bytes())
    image_vec, text_vec = (
        image.embed(image.preprocess(photo)[None]),
        text.embed(["the temple above the river"]),
    )
    assert image_vec.shape == text_vec.shape == (1, 16) and image.space == text.space
    base_vision = _params(tiny_clip[1], VISION)  # full fine-tuning moved the image tower too
    trained = _params(CLIPModel.from_pretrained(str(out)), VISION)
    assert any(not torch.equal(v, base_vision[k]) for k, v in trained.items())


def test_lock_image_trains_the_text_side_only(caption_manifest, tiny_clip, ray_cluster, tmp_path):
    from transformers import CLIPModel

    meta, out = _clip_finetune(caption_manifest, tiny_clip, tmp_path, lock_image=True)
    assert meta["base"]["lock_image"] is True and all(math.isfinite(r["loss"]) for r in meta["history"])
    trained, base = CLIPModel.from_pretrained(str(out)), tiny_clip[1]
    vision, base_vision = _params(trained, VISION), _params(base, VISION)
    assert vision and all(torch.equal(v, base_vision[k]) for k, v in vision.items())
    base_text = _params(base, TEXT)
    assert any(not torch.equal(v, base_text[k]) for k, v in _params(trained, TEXT).items())
