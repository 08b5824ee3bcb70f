"""Fusion heads on tiny dims: shapes, masking, collation, checkpoints, compatibility, prediction."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from models.errors import Incompatible, InvalidInput, NotFound
from models.fusion import (
    HEAD_KINDS,
    FusionDims,
    HeadMeta,
    LateFusion,
    ModalityFeatures,
    build_head,
    check_compatible,
    collate,
    list_heads,
    load_checkpoint,
    predict,
    save_checkpoint,
)

DIMS = FusionDims(
    pooled={"image": 6, "text": 5, "audio": 4},
    tokens={"image": 7, "text": 3, "audio": 5},
    hidden=8,
    heads=2,
    dropout=0.0,
)
LABELS = ["cat", "dog", "bird"]
KINDS = sorted(HEAD_KINDS)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def feat(rng, m, n_tokens=3, dims=DIMS):
    return ModalityFeatures(
        rng.normal(size=dims.pooled[m]).astype(np.float32),
        rng.normal(size=(n_tokens, dims.tokens[m])).astype(np.float32),
    )


def rows_with(present: list[tuple[str, ...]], seed=0):
    rng = np.random.default_rng(seed)
    return [
        {m: feat(rng, m, n_tokens=1 + (i + j) % 4) for j, m in enumerate(ms)} for i, ms in enumerate(present)
    ]


MIXED = [
    ("image", "text", "audio"),
    ("text",),
    ("image",),
    ("audio",),
    ("image", "audio"),
    ("text", "audio"),
    ("image", "text"),
]


def make_head(kind, seed=0):
    torch.manual_seed(seed)
    return build_head(kind, dims=DIMS, num_labels=len(LABELS)).eval()


def perturbed(batch, rows_mask_fn, seed=1):
    """A copy of ``batch`` whose pooled/token values are replaced with noise where ``rows_mask_fn``
    (modality, batch) -> bool (B,) is True."""
    g = torch.Generator().manual_seed(seed)
    out = dataclasses.replace(batch, pooled=dict(batch.pooled), tokens=dict(batch.tokens))
    for m in batch.pooled:
        sel = rows_mask_fn(m, batch)
        out.pooled[m] = torch.where(
            sel[:, None], torch.randn(batch.pooled[m].shape, generator=g) * 5, batch.pooled[m]
        )
        out.tokens[m] = torch.where(
            sel[:, None, None], torch.randn(batch.tokens[m].shape, generator=g) * 5, batch.tokens[m]
        )
    return out


# ------------------------------------------------------------------------------------------ heads
@pytest.mark.parametrize("kind", KINDS)
def test_output_shape_and_finite_with_missing_modalities(kind):
    logits = make_head(kind)(collate(rows_with(MIXED), DIMS))
    assert logits.shape == (len(MIXED), len(LABELS))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", KINDS)
def test_absent_modality_features_do_not_change_output(kind):
    head, batch = make_head(kind), collate(rows_with(MIXED), DIMS)
    noisy = perturbed(batch, lambda m, b: ~b.present[m])
    assert not torch.equal(noisy.pooled["image"], batch.pooled["image"])  # the perturbation did happen
    torch.testing.assert_close(head(noisy), head(batch), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_present_modality_features_do_change_output(kind):
    head, batch = make_head(kind), collate(rows_with(MIXED), DIMS)
    noisy = perturbed(batch, lambda m, b: b.present[m])
    moved = (head(noisy) - head(batch)).abs().amax(dim=1)
    assert (moved > 1e-4).all()  # every row has at least one present modality, and it matters


@pytest.mark.parametrize("kind", KINDS)
def test_each_single_modality_row_is_finite_and_distinct(kind):
    head = make_head(kind)
    logits = head(collate(rows_with([("image",), ("text",), ("audio",)]), DIMS))
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1]) and not torch.allclose(logits[1], logits[2])


def test_attention_without_any_key_modality_is_finite_and_uses_text():
    head = make_head("attention")
    batch = collate(rows_with([("text",), ("text",)]), DIMS)
    logits = head(batch)
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1])  # text alone still drives the prediction
    head.train()  # dropout on, grads flow: still finite
    logits = head(batch)
    logits.sum().backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


def test_attention_is_never_called_with_an_all_masked_key_row():
    """Older torch returns NaN for fully masked rows (2.5+ returns zeros): the head must not rely on it."""
    head, seen = make_head("attention"), []

    def spy(module, args, kwargs):
        seen.append(kwargs["key_padding_mask"].all(dim=1))

    for attn in head.attn.values():
        attn.register_forward_pre_hook(spy, with_kwargs=True)
    head(collate(rows_with([("text",), ("image",), ("audio", "text")]), DIMS))
    assert len(seen) == 2 and not any(rows.any() for rows in seen)


def test_attention_padding_tokens_are_ignored():
    head, batch = make_head("attention"), collate(rows_with(MIXED), DIMS)
    assert (~batch.token_mask["image"]).any()  # there is padding to perturb
    g = torch.Generator().manual_seed(3)
    noisy = dataclasses.replace(
        batch,
        tokens={
            m: torch.where(batch.token_mask[m][..., None], t, torch.randn(t.shape, generator=g) * 5)
            for m, t in batch.tokens.items()
        },
    )
    torch.testing.assert_close(head(noisy), head(batch), rtol=0, atol=1e-6)


def test_late_fusion_renormalises_over_present_modalities():
    head = make_head("late")
    assert isinstance(head, LateFusion)
    with torch.no_grad():
        head.weight_logits.copy_(torch.tensor([0.3, -1.0, 2.0]))
    batch = collate(rows_with([("audio",), ("image", "text")]), DIMS)
    w = head.modality_weights(torch.stack([batch.present[m] for m in head.modalities], 1))
    torch.testing.assert_close(w.sum(1), torch.ones(2))
    assert w[0, 2] == 1 and w[1, 2] == 0 and w[1, 0] > w[1, 1]
    torch.testing.assert_close(head(batch)[0], head.heads["audio"](batch.pooled["audio"])[0])


def test_heads_for_a_subset_of_modalities():
    dims = FusionDims(pooled={"image": 6, "audio": 4}, tokens={"image": 7, "audio": 5}, hidden=8, heads=2)
    rng = np.random.default_rng(0)
    rows = [
        {"image": feat(rng, "image", dims=dims)},
        {"audio": feat(rng, "audio", dims=dims), "text": feat(rng, "text")},
    ]
    for kind in KINDS:
        logits = build_head(kind, dims=dims, num_labels=2).eval()(collate(rows, dims))
        assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_build_head_rejects_unknown_kind_and_bad_dims():
    with pytest.raises(InvalidInput):
        build_head("mystery", dims=DIMS, num_labels=3)
    with pytest.raises(InvalidInput):
        FusionDims(pooled={"video": 3}, tokens={"video": 3})
    with pytest.raises(InvalidInput):
        FusionDims(pooled={"text": 3}, tokens={"text": 3}, hidden=10, heads=4)


# ---------------------------------------------------------------------------------------- collate
def test_collate_pads_and_marks_absent():
    rows = rows_with([("image", "text"), ("text",), ("image",)])
    batch = collate(rows, DIMS)
    assert batch.tokens["image"].shape == (3, 3, 7)  # token counts 1 and 3 -> padded to 3
    assert batch.token_mask["image"].sum(1).tolist() == [1, 0, 3]
    assert batch.present["image"].tolist() == [True, False, True]
    assert batch.present["audio"].tolist() == [False, False, False]
    assert batch.tokens["audio"].shape == (3, 1, 5) and not batch.token_mask["audio"].any()
    np.testing.assert_array_equal(batch.tokens["image"][2].numpy(), rows[2]["image"].tokens)
    np.testing.assert_array_equal(batch.pooled["image"][0].numpy(), rows[0]["image"].pooled)
    assert (batch.tokens["image"][0, 1:] == 0).all() and (batch.pooled["image"][1] == 0).all()


@pytest.mark.parametrize(
    "bad, expect",
    [
        (ModalityFeatures(np.zeros(9, np.float32), np.zeros((2, 7), np.float32)), "(6,)"),
        (ModalityFeatures(np.zeros(6, np.float32), np.zeros((2, 8), np.float32)), "(T, 7)"),
        (ModalityFeatures(np.zeros(6, np.float32), np.zeros(7, np.float32)), "(T, 7)"),
    ],
)
def test_collate_rejects_wrong_dims(bad, expect):
    rows = rows_with([("text",)]) + [{"image": bad}]
    with pytest.raises(Incompatible) as info:
        collate(rows, DIMS)
    assert info.value.param == "image" and expect in info.value.message and "got" in info.value.message


def test_collate_rejects_unknown_modality_and_nan():
    with pytest.raises(InvalidInput):
        collate([{"video": ModalityFeatures(np.zeros(3), np.zeros((1, 3)))}], DIMS)
    row = rows_with([("text",)])[0]
    row["text"].pooled[0] = np.nan
    with pytest.raises(InvalidInput):
        collate([row], DIMS)


# ------------------------------------------------------------------------------------ checkpoints
def meta_for(kind, head_id="pets_v1", dims=DIMS):
    return HeadMeta(
        head_id=head_id,
        kind=kind,
        labels=LABELS,
        dims=dims,
        encoders={
            "image": {"id": "conse-effnet", "version": "1"},
            "text": {"id": "minilm", "version": "1"},
            "audio": {"id": "whisper-base", "version": "1"},
        },
        metrics={"val_accuracy": 0.9},
        created=1700000000,
        mmserve_version="0.1.0",
    )


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, kind):
    head, meta = make_head(kind), meta_for(kind)
    path = save_checkpoint(tmp_path, head, meta)
    assert path == tmp_path / "pets_v1" and sorted(p.name for p in path.iterdir()) == [
        "meta.json",
        "weights.safetensors",
    ]
    loaded, loaded_meta = load_checkpoint(tmp_path, "pets_v1")
    assert loaded_meta == meta and not loaded.training
    batch = collate(rows_with(MIXED), DIMS)
    torch.testing.assert_close(loaded(batch), head(batch), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["pets_v1"]  # no temp dirs left behind


def test_save_refuses_overwrite_unless_asked(tmp_path):
    save_checkpoint(tmp_path, make_head("late"), meta_for("late"))
    with pytest.raises(InvalidInput):
        save_checkpoint(tmp_path, make_head("early"), meta_for("early"))
    save_checkpoint(tmp_path, make_head("early"), meta_for("early"), overwrite=True)
    assert load_checkpoint(tmp_path, "pets_v1")[1].kind == "early"
    assert [p.name for p in tmp_path.iterdir()] == ["pets_v1"]


def test_list_heads_skips_junk(tmp_path):
    save_checkpoint(tmp_path, make_head("late"), meta_for("late", head_id="b"))
    save_checkpoint(tmp_path, make_head("early"), meta_for("early", head_id="a"))
    (tmp_path / ".tmp-c-123").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta.json").write_text("{not json")
    assert [m.head_id for m in list_heads(tmp_path)] == ["a", "b"]
    assert list_heads(tmp_path / "missing") == []


@pytest.mark.parametrize("head_id", ["../evil", "..", "a/b", "", "Upper", "x" * 65, "/etc", "a.b", "sp ace"])
def test_bad_head_ids_are_refused(tmp_path, head_id):
    with pytest.raises(InvalidInput):
        load_checkpoint(tmp_path, head_id)
    with pytest.raises(InvalidInput):
        save_checkpoint(tmp_path, make_head("late"), meta_for("late", head_id=head_id))


def test_symlink_out_of_store_is_refused(tmp_path):
    outside, store = tmp_path / "outside", tmp_path / "store"
    save_checkpoint(outside, make_head("late"), meta_for("late"))
    store.mkdir()
    (store / "pets_v1").symlink_to(outside / "pets_v1")
    with pytest.raises(InvalidInput):
        load_checkpoint(store, "pets_v1")


def test_missing_head_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        load_checkpoint(tmp_path, "nope")


def test_tampered_meta_or_weights_are_incompatible(tmp_path):
    path = save_checkpoint(tmp_path, make_head("late"), meta_for("late"))
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "kind": "early"}))  # weights no longer match
    with pytest.raises(Incompatible):
        load_checkpoint(tmp_path, "pets_v1")


# ---------------------------------------------------------------------------------- compatibility
RUNNING = {
    "image": {"id": "conse-effnet", "pooled_dim": 6, "token_dim": 7},
    "text": {"id": "minilm", "pooled_dim": 5, "token_dim": 3},
    "audio": {"id": "whisper-base", "pooled_dim": 4, "token_dim": 5},
}


def test_check_compatible_accepts_matching_and_partial_services():
    check_compatible(meta_for("late"), RUNNING)
    check_compatible(meta_for("late"), {"text": RUNNING["text"]})  # missing modalities are masked


@pytest.mark.parametrize(
    "change, words",
    [
        ({"id": "clip-b32"}, ["'conse-effnet'", "'clip-b32'", "image"]),
        ({"pooled_dim": 512}, ["6-d", "512-d"]),
        ({"token_dim": 1280}, ["7-d", "1280-d"]),
    ],
)
def test_check_compatible_rejects_mismatch(change, words):
    running = {**RUNNING, "image": {**RUNNING["image"], **change}}
    with pytest.raises(Incompatible) as info:
        check_compatible(meta_for("late"), running)
    assert info.value.param == "image" and "pets_v1" in info.value.message
    assert all(w in info.value.message for w in words)


def test_check_compatible_needs_one_shared_modality():
    dims = FusionDims(pooled={"image": 6}, tokens={"image": 7}, hidden=8, heads=2)
    with pytest.raises(Incompatible):
        check_compatible(meta_for("late", dims=dims), {"text": RUNNING["text"]})


# -------------------------------------------------------------------------------------- predict
def test_predict_scores_sorted_and_missing_reported():
    head, meta = make_head("attention"), meta_for("attention")
    out = predict(head, meta, rows_with([("image", "text", "audio"), ("audio",)]))
    assert [r["missing"] for r in out] == [[], ["image", "text"]]
    for r in out:
        scores = [s["score"] for s in r["scores"]]
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
        assert r["label"] == r["scores"][0]["label"] and {s["label"] for s in r["scores"]} == set(LABELS)


def test_predict_needs_a_known_modality_per_row():
    dims = FusionDims(pooled={"image": 6}, tokens={"image": 7}, hidden=8, heads=2)
    meta = meta_for("early", dims=dims)
    head = build_head("early", dims=dims, num_labels=3)
    with pytest.raises(InvalidInput):
        predict(head, meta, rows_with([("image",), ("text",)]))
    with pytest.raises(InvalidInput):
        predict(head, meta, [])
