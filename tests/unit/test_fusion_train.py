"""Training fusion heads on a synthetic task where fusion is needed to do well.

Each modality is informative (class prototype + noise, in pooled and token features) on a random
half of the rows and pure noise on the other half; each modality is also missing from ~15% of rows.
A single modality therefore tops out near 0.5 + 0.5/3 ~ 0.67 accuracy, while a head that learns
which modality to trust per row can reach ~0.85.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.errors import Incompatible, InvalidInput
from models.fusion import HEAD_KINDS, FusionDims, HeadMeta, ModalityFeatures, collate, predict
from models.fusion_train import (
    EpochStats,
    Example,
    drop_modalities,
    infer_dims,
    single_modality_baselines,
    single_modality_probes,
    split,
    train_head,
)

LABELS = ["a", "b", "c"]
POOLED, TOKENS = {"image": 12, "text": 10, "audio": 8}, {"image": 6, "text": 5, "audio": 7}
EPOCHS = 25


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic(n: int, *, seed: int = 0, missing: float = 0.15) -> list[Example]:
    rng = np.random.default_rng(seed)
    protos = {m: rng.normal(size=(3, POOLED[m])) for m in POOLED}
    token_protos = {m: rng.normal(size=(3, TOKENS[m])) for m in POOLED}
    examples = []
    for i in range(n):
        y = i % len(LABELS)
        feats = {}
        for m in POOLED:
            if rng.random() < missing:
                continue
            informative, n_tokens = rng.random() < 0.5, int(rng.integers(2, 6))
            pooled = protos[m][y] * informative + rng.normal(size=POOLED[m]) * (0.5 if informative else 1.0)
            tokens = token_protos[m][y] * informative + rng.normal(size=(n_tokens, TOKENS[m])) * (
                0.5 if informative else 1.0
            )
            feats[m] = ModalityFeatures(pooled.astype(np.float32), tokens.astype(np.float32))
        if not feats:  # keep at least one (uninformative) modality per row
            feats["text"] = ModalityFeatures(
                rng.normal(size=10).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
            )
        examples.append(Example(feats, LABELS[y]))
    return examples


@pytest.fixture(scope="module")
def data():
    examples = synthetic(420)
    rest, test = split(examples, val_fraction=1 / 3, seed=0)
    train, val = split(rest, val_fraction=0.25, seed=0)
    return train, val, test, infer_dims(examples, hidden=32, heads=2, dropout=0.1)


@pytest.fixture(scope="module")
def trained(data):
    train, val, _, dims = data
    return {
        kind: train_head(kind, train, val, dims=dims, labels=LABELS, epochs=EPOCHS, lr=3e-3, seed=0)
        for kind in sorted(HEAD_KINDS)
    }


def accuracy(result, dims, examples) -> float:
    meta = HeadMeta(head_id="t", kind="late", labels=LABELS, dims=dims)
    out = predict(result.head, meta, [e.features for e in examples])
    return float(np.mean([o["label"] == e.label for o, e in zip(out, examples)]))


@pytest.mark.parametrize("kind", sorted(HEAD_KINDS))
def test_each_head_learns(data, trained, kind):
    _, _, test, dims = data
    assert accuracy(trained[kind], dims, test) > 0.7  # chance is 1/3


def test_late_fusion_beats_best_single_modality(data, trained):
    train, _, test, dims = data
    baselines = single_modality_baselines(train, test, labels=LABELS, dims=dims)
    assert set(baselines) == {"image", "text", "audio"}
    assert all(0.45 < acc < 0.85 for acc in baselines.values()), (
        baselines
    )  # each modality alone is informative but weak
    assert accuracy(trained["late"], dims, test) > max(baselines.values()) + 0.05, baselines


def test_history_and_best_epoch(trained):
    for result in trained.values():
        assert [s.epoch for s in result.history] == list(range(1, EPOCHS + 1))
        assert all(
            isinstance(s, EpochStats) and np.isfinite(s.train_loss) and np.isfinite(s.val_loss)
            for s in result.history
        )
        best = result.history[result.best_epoch - 1]
        assert result.val_accuracy == best.val_accuracy == max(s.val_accuracy for s in result.history)
        assert not result.head.training


def test_training_is_deterministic_and_leaves_global_rng_alone(data):
    train, val, _, dims = data
    seen = []
    torch.manual_seed(123)
    before = torch.get_rng_state()
    runs = [
        train_head("attention", train, val, dims=dims, labels=LABELS, epochs=3, seed=s, on_epoch=seen.append)
        for s in (7, 7, 8)
    ]
    assert torch.equal(torch.get_rng_state(), before)
    assert runs[0].history == runs[1].history and runs[0].history != runs[2].history
    a, b = runs[0].head.state_dict(), runs[1].head.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [s.epoch for s in seen] == [1, 2, 3] * 3


def test_train_head_rejects_unknown_labels_and_empty_sets(data):
    train, val, _, dims = data
    with pytest.raises(InvalidInput):
        train_head("early", train, val, dims=dims, labels=["a", "b"], epochs=1)
    with pytest.raises(InvalidInput):
        train_head("early", train, [], dims=dims, labels=LABELS, epochs=1)
    with pytest.raises(InvalidInput):
        train_head("early", train, val, dims=dims, labels=LABELS, epochs=0)


def test_split_is_stratified_disjoint_and_seeded():
    examples = synthetic(40) + synthetic(8, seed=1)[:1]  # labels a: 15, b: 13, c: 13 rows
    train, val = split(examples, val_fraction=0.25, seed=0)
    assert len(train) + len(val) == len(examples)
    assert {id(e) for e in train}.isdisjoint(id(e) for e in val)
    counts = {label: sum(e.label == label for e in val) for label in LABELS}
    assert counts == {"a": 4, "b": 3, "c": 3}
    assert split(examples, seed=0) == (train, val) and split(examples, seed=1) != (train, val)


def test_infer_dims_and_mismatch():
    dims = infer_dims(synthetic(10), hidden=16, heads=2)
    assert dims == FusionDims(pooled=POOLED, tokens=TOKENS, hidden=16, heads=2)
    assert list(dims.pooled) == ["image", "text", "audio"]
    bad = Example({"image": ModalityFeatures(np.zeros(3, np.float32), np.zeros((1, 6), np.float32))}, "a")
    with pytest.raises(Incompatible):
        infer_dims(synthetic(10) + [bad])


def test_baselines_count_only_rows_where_the_modality_is_present(data):
    train, _, test, dims = data
    probes = single_modality_probes(train, test, labels=LABELS, dims=dims)
    for m, probe in probes.items():
        assert probe.n_train == sum(m in e.features for e in train) < len(train)
        assert probe.n_val == sum(m in e.features for e in test) < len(test)
    only_image = [Example({"image": e.features["image"]}, e.label) for e in train if "image" in e.features]
    assert np.isnan(single_modality_probes(only_image, test, labels=LABELS, dims=dims)["audio"].accuracy)
    assert set(single_modality_baselines(only_image, test, labels=LABELS, dims=dims)) == {"image"}


def test_modality_dropout_keeps_one_modality_and_only_drops_present_ones(data):
    train, _, _, dims = data
    batch = collate([e.features for e in train], dims)
    dropped = drop_modalities(batch, p=0.9, generator=torch.Generator().manual_seed(0))
    before = torch.stack([batch.present[m] for m in dims.modalities], 1)
    after = torch.stack([dropped.present[m] for m in dims.modalities], 1)
    assert after.any(1).all() and not (after & ~before).any() and after.sum() < before.sum()
