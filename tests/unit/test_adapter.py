"""The adapter space without weights or Ray: loss, metrics, training on toy features, checkpoints, specs."""

import json
import math

import numpy as np
import pytest
import torch

from models import adapter
from models.errors import InvalidInput, NotFound
from models.registry import TextModelSpec, VisionModelSpec


def toy_features(n_groups=6, per_group=6, *, seed=0, noise_seed=0, noise=0.3) -> adapter.FeatureSet:
    """Each group has a hidden concept; images and captions are noisy, differently mixed views of it."""
    rng = np.random.default_rng(seed)
    concept = rng.normal(size=(n_groups, 8))
    img_mix, txt_mix = rng.normal(size=(8, 32)), rng.normal(size=(8, 12))
    rng = np.random.default_rng([seed, noise_seed])
    groups = np.repeat(np.arange(n_groups), per_group)
    images = concept[groups] @ img_mix + noise * rng.normal(size=(len(groups), 32))
    tokens = np.repeat((concept[groups] @ txt_mix)[:, None, :], 3, axis=1) + noise * rng.normal(
        size=(len(groups), 3, 12)
    )
    return adapter.FeatureSet(
        image_pooled=images.astype(np.float32),
        text_tokens=tokens.astype(np.float32),
        text_mask=np.ones((len(groups), 3), np.float32),
        image_of_text=np.arange(len(groups)),
        groups=groups,
        base_image=rng.normal(size=(len(groups), 4)).astype(np.float32),
        base_text=rng.normal(size=(len(groups), 4)).astype(np.float32),
    )


def test_clip_loss_is_symmetric_infonce_and_groups_soften_the_targets():
    img = torch.nn.functional.normalize(torch.randn(4, 5), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(4, 5), dim=-1)
    logits = 10 * img @ txt.T
    target = torch.arange(4)
    expected = (
        torch.nn.functional.cross_entropy(logits, target)
        + torch.nn.functional.cross_entropy(logits.T, target)
    ) / 2
    assert torch.isclose(adapter.clip_loss(img, txt, torch.tensor(10.0)), expected)
    assert torch.isclose(adapter.clip_loss(img, txt, torch.tensor(10.0), torch.arange(4)), expected)
    # two pairs per group: grouped targets prefer one point per group, plain InfoNCE prefers every
    # pair apart (pushing two captions of one photo away from each other)
    collapsed = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 1.0, 0, 0]])
    apart, scale, groups = torch.eye(4), torch.tensor(50.0), torch.tensor([0, 0, 1, 1])
    assert adapter.clip_loss(collapsed, collapsed, scale, groups) < adapter.clip_loss(
        apart, apart, scale, groups
    )
    assert adapter.clip_loss(apart, apart, scale) < adapter.clip_loss(collapsed, collapsed, scale)
    assert math.isclose(
        float(adapter.clip_loss(collapsed, collapsed, scale, groups)), math.log(2), rel_tol=1e-3
    )


def test_retrieval_metrics_on_a_known_ranking():
    image = np.eye(3, dtype=np.float32)
    text = np.array(
        [[1, 0, 0], [0, 0.4, 0.6], [0, 0, 1], [0.3, 0.9, 0]], np.float32
    )  # captions 1, 3 misranked
    m = adapter.retrieval_metrics(image, text, np.array([0, 1, 2, 0]))
    assert m["t2i_r1"] == 0.5 and m["t2i_r5"] == 1.0
    assert m["i2t_r1"] == pytest.approx(2 / 3) and m["i2t_r5"] == 1.0


def test_attention_pooling_starts_as_masked_mean_pooling():
    heads = adapter.AdapterHeads(adapter.AdapterDims(4, 3, 2))
    tokens, mask = adapter.pad_tokens([np.ones((2, 3), np.float32), np.full((1, 3), 5, np.float32)])
    assert tokens.shape == (2, 2, 3) and mask.tolist() == [[1, 1], [1, 0]]
    out = heads.text(torch.from_numpy(tokens), torch.from_numpy(mask))
    mean = torch.nn.functional.normalize(heads.text_proj(torch.tensor([[1.0] * 3, [5.0] * 3])), dim=-1)
    assert torch.allclose(out, mean, atol=1e-6)


def test_fit_lowers_the_loss_and_beats_the_base_space_on_held_out_pairs():
    train, val = toy_features(noise_seed=0), toy_features(per_group=1, noise_seed=1)
    heads, losses = adapter.fit(train, adapter.TrainConfig(epochs=40, batch_size=12, dim=8))
    assert losses[-1] < 0.6 * losses[0]
    after = adapter.evaluate(heads, val)
    assert after["t2i_r1"] > val.base_metrics()["t2i_r1"] and after["t2i_r1"] >= 0.5
    assert abs(float(heads.scale().detach()) - 1 / 0.07) > 0.1  # the temperature was learned, not fixed


def test_checkpoint_round_trip_is_atomic_and_names_its_space(tmp_path):
    heads, _ = adapter.fit(toy_features(), adapter.TrainConfig(epochs=2, dim=8))
    out = tmp_path / "ckpt"
    meta = adapter.save_checkpoint(
        out,
        heads,
        name="toy",
        base={"image": "x", "text": "y"},
        training={"epochs": 2},
        metrics={"val": {"before": {}, "after": {}}},
    )
    assert sorted(p.name for p in out.iterdir()) == sorted([adapter.WEIGHTS_FILE, adapter.META_FILE])
    assert meta["space"].startswith("adapter:toy@") and adapter.adapter_space(out) == meta["space"]
    loaded, meta2 = adapter.load_heads(out)
    feats = toy_features()
    assert torch.allclose(
        loaded.image(torch.from_numpy(feats.image_pooled)), heads.image(torch.from_numpy(feats.image_pooled))
    )
    # retrained weights replace the old checkpoint in place, under a new space name; no staging dirs remain
    heads2, _ = adapter.fit(toy_features(seed=1), adapter.TrainConfig(epochs=2, dim=8, seed=1))
    meta3 = adapter.save_checkpoint(out, heads2, name="toy", base={}, training={}, metrics={})
    assert meta3["space"] != meta["space"] and adapter.adapter_space(out) == meta3["space"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_bad_checkpoints_and_manifests_are_refused(tmp_path):
    with pytest.raises(NotFound):
        adapter.read_meta(tmp_path)
    (tmp_path / adapter.META_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(InvalidInput):
        adapter.read_meta(tmp_path)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "a.jpg"}\n')
    with pytest.raises(InvalidInput, match="caption"):
        adapter.read_manifest(manifest)
    manifest.write_text('{"image": "a.jpg", "caption": "x", "split": "holdout"}\n')
    with pytest.raises(InvalidInput, match="split"):
        adapter.read_manifest(manifest)
    manifest.write_text('{"image": "a.jpg", "caption": "x"}\n{"image": "a.jpg", "caption": "y"}\n')
    pairs = adapter.read_manifest(manifest)
    assert len({p.split for p in pairs}) == 1 and pairs[0].image == (tmp_path / "a.jpg").resolve()


def test_specs_take_their_space_from_the_checkpoint(tmp_path):
    heads, _ = adapter.fit(toy_features(), adapter.TrainConfig(epochs=1, dim=8))
    meta = adapter.save_checkpoint(tmp_path / "a", heads, name="demo", base={}, training={}, metrics={})
    text = TextModelSpec(kind="adapter", path=str(tmp_path / "a"))
    vision = VisionModelSpec(embedder="adapter", embedder_path=str(tmp_path / "a"))
    assert text.space == vision.space(text) == meta["space"]
    assert vision.space(TextModelSpec()) == meta["space"] != TextModelSpec().space
    with pytest.raises(ValueError, match="needs path"):
        TextModelSpec(kind="adapter")
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        VisionModelSpec(embedder="adapter", embedder_path="x", classifier="vit", classifier_path="y")
