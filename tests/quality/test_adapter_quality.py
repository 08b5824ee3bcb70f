"""The adapter space on real packaged encoders and the demo caption set (no Ray): trained with
validation held out by photo, it never does worse than ConSE on the test photos, and served it
embeds as in training (untrained heads serve ConSE itself)."""

import numpy as np
import pytest
import torch

from models import adapter, registry
from models.media import decode_image
from models.registry import TextModelSpec, VisionModelSpec, load_classifier, load_embedder, load_text
from tools import demo_captions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    pairs = adapter.read_manifest(demo_captions.build(root, views=4))
    encoders = registry.load_frozen_encoders()
    feats = {
        s: adapter.cached_features(
            pairs, s, encoders_fn=lambda: encoders, cache_dir=root / "cache", fingerprint="test"
        )
        for s in adapter.SPLITS
    }
    heads, losses = adapter.fit(feats["train"], adapter.TrainConfig(epochs=30), val=feats["val"])
    metrics = {s: {"before": f.base_metrics(), "after": adapter.evaluate(heads, f)} for s, f in feats.items()}
    out = root / "ckpt"
    adapter.save_checkpoint(
        out,
        heads,
        name="demo",
        base=encoders.describe(),
        training={"epochs": 30},
        metrics=metrics,
        promoted=adapter.promotion(metrics["val"]["before"], metrics["val"]["after"], kept_epoch=0),
    )
    return root, pairs, out, feats, metrics


def test_the_kept_heads_are_no_worse_than_conse_on_val_and_test(trained):
    _, pairs, _, _, metrics = trained
    groups = {s: {p.group for p in pairs if p.split == s} for s in adapter.SPLITS}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    val, test = metrics["val"], metrics["test"]
    assert adapter.selection_score(val["after"]) >= adapter.selection_score(val["before"]), val
    # the demo's test photos: ConSE's R@1 is the floor the issue pins (0.76 with these captions)
    assert test["before"]["t2i_r1"] >= 0.7 and test["after"]["t2i_r1"] >= test["before"]["t2i_r1"], test


def test_features_are_cached_once(trained):
    root, pairs, *_ = trained

    def refuse():
        raise AssertionError("features were recomputed")

    again = adapter.cached_features(
        pairs, "val", encoders_fn=refuse, cache_dir=root / "cache", fingerprint="test"
    )
    assert again.image_pooled.shape[1] == 1280 and again.text_tokens.shape[2] == 384


def _served(path):
    text_spec = TextModelSpec(kind="adapter", path=str(path), allow_worse_than_base=True)
    vision_spec = VisionModelSpec(embedder="adapter", embedder_path=str(path), allow_worse_than_base=True)
    text = load_text(text_spec)
    image = load_embedder(vision_spec, text_spec, classifier=load_classifier(vision_spec))
    assert text.space == image.space == text_spec.space == vision_spec.space(text_spec)
    return text, image


def _embed(text, image, rows):
    captions = text.embed([p.caption for p in rows])
    photos = image.embed(torch.stack([image.preprocess(decode_image(p.image.read_bytes())) for p in rows]))
    return captions, photos


def test_served_embedders_share_the_checkpoint_space_and_match_training(trained):
    root, pairs, out, feats, _ = trained
    text, image = _served(out)
    assert text.space.startswith("adapter:demo@") and text.dim == image.dim == 384
    assert text.quality["metrics"]["test"]["before"]["t2i_r1"] == pytest.approx(0.76, abs=0.005)
    test = [p for p in pairs if p.split == "test"]
    captions, _ = _embed(text, image, test)
    one_per_image = [next(p for p in test if p.image == i) for i in sorted({p.image for p in test})]
    _, photos = _embed(text, image, one_per_image)  # FeatureSet order: distinct images, sorted
    trained_photos, trained_captions = adapter.embed_features(adapter.load_heads(out)[0], feats["test"])
    assert np.allclose(captions, trained_captions, atol=1e-4)
    assert np.allclose(photos, trained_photos, atol=1e-3)


def test_untrained_heads_serve_conse_itself(trained, tmp_path):
    """Epoch 0 of the residual heads, served: the same vectors as the served ConSE space."""
    root, pairs, _, feats, _ = trained
    dims = adapter.AdapterDims()
    adapter.save_checkpoint(
        tmp_path / "zero", adapter.AdapterHeads(dims), name="zero", base={}, training={}, metrics={}
    )
    text, image = _served(tmp_path / "zero")
    base_spec = VisionModelSpec()
    conse = load_embedder(base_spec, TextModelSpec(), classifier=load_classifier(base_spec))
    minilm = load_text(TextModelSpec())
    rows = [p for p in pairs if p.split == "test"]
    captions, photos = _embed(text, image, rows)
    base_captions, base_photos = _embed(minilm, conse, rows)
    assert np.allclose(captions, base_captions, atol=1e-4)
    assert np.allclose(photos, base_photos, atol=1e-3)
