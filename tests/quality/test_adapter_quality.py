"""The adapter space on real packaged encoders and the demo caption set (no Ray)."""

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
    pairs = adapter.read_manifest(demo_captions.build(root))
    encoders = registry.load_frozen_encoders()
    feats = {
        s: adapter.cached_features(
            pairs, s, encoders_fn=lambda: encoders, cache_dir=root / "cache", fingerprint="test"
        )
        for s in ("train", "val")
    }
    heads, losses = adapter.fit(feats["train"], adapter.TrainConfig(epochs=30))
    metrics = {"before": feats["val"].base_metrics(), "after": adapter.evaluate(heads, feats["val"])}
    out = root / "ckpt"
    adapter.save_checkpoint(
        out, heads, name="demo", base=encoders.describe(), training={"epochs": 30}, metrics={"val": metrics}
    )
    return root, pairs, out, losses, metrics


def test_training_beats_conse_on_val(trained):
    _, _, _, losses, metrics = trained
    assert (
        losses[-1] < 0.8 * losses[0]
    )  # grouped targets floor the loss at their entropy (~log of photos per batch)
    assert metrics["after"]["t2i_r1"] > metrics["before"]["t2i_r1"], metrics
    assert metrics["after"]["i2t_r1"] > metrics["before"]["i2t_r1"], metrics


def test_features_are_cached_once(trained):
    root, pairs, *_ = trained

    def refuse():
        raise AssertionError("features were recomputed")

    again = adapter.cached_features(
        pairs, "val", encoders_fn=refuse, cache_dir=root / "cache", fingerprint="test"
    )
    assert again.image_pooled.shape[1] == 1280 and again.text_tokens.shape[2] == 384


def test_served_embedders_share_the_checkpoint_space_and_match_training(trained):
    root, pairs, out, _, _ = trained
    text_spec = TextModelSpec(kind="adapter", path=str(out))
    vision_spec = VisionModelSpec(embedder="adapter", embedder_path=str(out))
    text = load_text(text_spec)
    image = load_embedder(vision_spec, text_spec, classifier=load_classifier(vision_spec))
    assert text.space == image.space == text_spec.space == vision_spec.space(text_spec)
    assert text.space.startswith("adapter:demo@") and text.dim == image.dim == 256
    val = [p for p in pairs if p.split == "val"]
    captions = text.embed([p.caption for p in val])
    photos = image.embed(torch.stack([image.preprocess(decode_image(p.image.read_bytes())) for p in val]))
    assert float(np.mean((captions @ photos.T).argmax(1) == np.arange(len(val)))) >= 0.75
