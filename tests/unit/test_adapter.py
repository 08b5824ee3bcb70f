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
    """Each group has a hidden concept; images and captions are noisy, differently mixed views of it.
    The base space (12-d, as the token states: the heads' base text vector is their mean) knows
    nothing of the concept on the image side: random unit vectors."""
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
        base_image=_unit(rng.normal(size=(len(groups), 12))),
        base_text=_unit(tokens.mean(1)),
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


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


def test_untrained_heads_are_the_base_space():
    """Epoch 0 reproduces the base space: the residual layers start at zero, the text side's base is
    the masked mean of the token states (MiniLM's own pooling), the image side's is its ConSE vector."""
    feats = toy_features(noise=1.0)
    heads = adapter.AdapterHeads(adapter.AdapterDims(32, 12, 12))
    with torch.no_grad():
        image = heads.image(torch.from_numpy(feats.image_pooled), torch.from_numpy(feats.base_image))
        text = heads.text(torch.from_numpy(feats.text_tokens), torch.from_numpy(feats.text_mask))
    assert np.allclose(image.numpy(), feats.base_image, atol=1e-6)
    assert np.allclose(text.numpy(), feats.base_text, atol=1e-6)
    assert adapter.evaluate(heads, feats) == feats.base_metrics()
    # padding is not averaged in
    tokens, mask = adapter.pad_tokens([np.ones((2, 12), np.float32), np.full((1, 12), 5, np.float32)])
    assert mask.tolist() == [[1, 1], [1, 0]]
    out = heads.text(torch.from_numpy(tokens), torch.from_numpy(mask))
    assert torch.allclose(out, torch.full((2, 12), 12**-0.5), atol=1e-6)


def test_fit_lowers_the_loss_and_beats_the_base_space_on_held_out_photos():
    train, val = toy_features(noise_seed=0), toy_features(per_group=1, noise_seed=1)
    heads, losses = adapter.fit(train, adapter.TrainConfig(epochs=40, batch_size=12), val=val)
    assert losses[-1] < 0.6 * losses[0]
    after = adapter.evaluate(heads, val)
    assert after["t2i_r1"] > val.base_metrics()["t2i_r1"] and after["t2i_r1"] >= 0.5
    assert abs(float(heads.scale().detach()) - 1 / 0.07) > 0.1  # the temperature was learned, not fixed


def test_early_stopping_keeps_the_base_when_no_epoch_beats_it_on_val():
    """Val whose captions match the base space perfectly: training can only lose there, so the kept
    heads are the untrained ones (the base space) and training stopped after ``patience`` epochs."""
    train, val = toy_features(noise_seed=0), toy_features(per_group=1, noise_seed=1)
    val.base_image = val.base_text.copy()  # the base space is perfect on val
    epochs = []
    heads, losses = adapter.fit(
        train,
        adapter.TrainConfig(epochs=40, batch_size=12, patience=3),
        val=val,
        on_epoch=lambda e, _: epochs.append(e),
    )
    assert len(losses) == 3 and losses[-1] < losses[0]  # it trained, found nothing better, stopped
    assert not heads.image_res.weight.any() and not heads.text_res.weight.any()
    assert adapter.evaluate(heads, val) == val.base_metrics()


def test_checkpoint_round_trip_is_atomic_and_names_its_space(tmp_path):
    heads, _ = adapter.fit(toy_features(), adapter.TrainConfig(epochs=2))
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
    inputs = torch.from_numpy(feats.image_pooled), torch.from_numpy(feats.base_image)
    assert torch.allclose(loaded.image(*inputs), heads.image(*inputs))
    # retrained weights replace the old checkpoint in place, under a new space name; no staging dirs remain
    heads2, _ = adapter.fit(toy_features(seed=1), adapter.TrainConfig(epochs=2, seed=1))
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
    (tmp_path / "a.jpg").write_bytes(b"photo a")
    manifest.write_text('{"image": "a.jpg", "caption": "x"}\n{"image": "a.jpg", "caption": "y"}\n')
    pairs = adapter.read_manifest(manifest, val_fraction=0.0)
    assert {p.split for p in pairs} == {"train"} and pairs[0].image == (tmp_path / "a.jpg").resolve()
    manifest.write_text('{"image": "b.jpg", "caption": "x"}\n')
    with pytest.raises(InvalidInput, match="cannot read image"):
        adapter.read_manifest(manifest)


def test_validation_is_held_out_by_photo(tmp_path):
    """Rows without a split are split by their group (the photo, else a hash of the image bytes), so
    two files with the same bytes share a split; a photo in two splits is refused."""
    for i in range(40):
        (tmp_path / f"{i}.jpg").write_bytes(f"photo {i}".encode())
        (tmp_path / f"{i}-copy.jpg").write_bytes(f"photo {i}".encode())
    manifest = tmp_path / "m.jsonl"
    rows = [{"image": f"{i}{c}.jpg", "caption": f"photo {i}"} for i in range(40) for c in ("", "-copy")]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = adapter.read_manifest(manifest, val_fraction=0.3)
    by_group: dict[str, set] = {}
    for p in pairs:
        by_group.setdefault(p.group, set()).add(p.split)
    assert len(by_group) == 40 and all(len(s) == 1 for s in by_group.values())
    assert {"train", "val"} == {p.split for p in pairs}
    leak = [
        {"image": "0.jpg", "caption": "x", "split": "train", "photo": "p"},
        {"image": "1.jpg", "caption": "y", "split": "val", "photo": "p"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in leak))
    with pytest.raises(InvalidInput, match="held out by photo"):
        adapter.read_manifest(manifest)


def test_specs_take_their_space_from_the_checkpoint(tmp_path):
    heads, _ = adapter.fit(toy_features(), adapter.TrainConfig(epochs=1))
    meta = adapter.save_checkpoint(tmp_path / "a", heads, name="demo", base={}, training={}, metrics={})
    text = TextModelSpec(kind="adapter", path=str(tmp_path / "a"))
    vision = VisionModelSpec(embedder="adapter", embedder_path=str(tmp_path / "a"))
    assert text.space == vision.space(text) == meta["space"]
    assert vision.space(TextModelSpec()) == meta["space"] != TextModelSpec().space
    with pytest.raises(ValueError, match="needs path"):
        TextModelSpec(kind="adapter")
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        VisionModelSpec(embedder="adapter", embedder_path="x", classifier="vit", classifier_path="y")
