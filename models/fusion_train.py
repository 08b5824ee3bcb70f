"""Offline training for fusion heads, plus the single-modality baselines fusion must beat.

Deterministic given ``seed``: every random draw comes from generators seeded here, and the global
torch RNG (dropout) is forked so callers' RNG state is untouched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.errors import Incompatible, InvalidInput
from models.fusion import MODALITIES, FusionBatch, FusionDims, ModalityFeatures, build_head, collate


@dataclass(frozen=True)
class Example:
    features: dict[str, ModalityFeatures]
    label: str


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float


@dataclass
class TrainResult:
    head: nn.Module  # eval mode, holding the best-validation-accuracy weights
    history: list[EpochStats]
    best_epoch: int
    val_accuracy: float


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float
    n_train: int  # rows where the modality is present
    n_val: int


# ---------------------------------------------------------------------------------- data helpers
def split(
    examples: Sequence[Example], *, val_fraction: float = 0.25, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Stratified split: each label sends ``round(n * val_fraction)`` of its examples (at least one
    when it has two or more) to validation. Order within each side follows the input."""
    if not 0 < val_fraction < 1:
        raise InvalidInput(f"val_fraction must be in (0, 1), got {val_fraction}", param="val_fraction")
    rng = np.random.default_rng(seed)
    val_idx: set[int] = set()
    for label in sorted({e.label for e in examples}):
        idx = [i for i, e in enumerate(examples) if e.label == label]
        n_val = min(len(idx) - 1, max(1, round(len(idx) * val_fraction))) if len(idx) > 1 else 0
        val_idx.update(int(i) for i in rng.permutation(idx)[:n_val])
    train = [e for i, e in enumerate(examples) if i not in val_idx]
    return train, [e for i, e in enumerate(examples) if i in val_idx]


def infer_dims(
    examples: Sequence[Example], *, hidden: int = 256, heads: int = 4, dropout: float = 0.1
) -> FusionDims:
    """Pooled/token dims of every modality seen in ``examples``; Incompatible if they disagree."""
    pooled: dict[str, int] = {}
    tokens: dict[str, int] = {}
    for e in examples:
        for m, f in e.features.items():
            p, t = int(np.shape(f.pooled)[-1]), int(np.shape(f.tokens)[-1])
            if pooled.setdefault(m, p) != p or tokens.setdefault(m, t) != t:
                raise Incompatible(
                    f"{m} features disagree: pooled {pooled[m]} vs {p}, tokens {tokens[m]} vs {t}", param=m
                )
    order = [m for m in MODALITIES if m in pooled]
    return FusionDims(
        pooled={m: pooled[m] for m in order},
        tokens={m: tokens[m] for m in order},
        hidden=hidden,
        heads=heads,
        dropout=dropout,
    )


def _targets(examples: Sequence[Example], labels: list[str]) -> torch.Tensor:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({e.label for e in examples} - set(index))
    if unknown:
        raise InvalidInput(f"examples carry labels {unknown} not in labels={labels}", param="labels")
    return torch.tensor([index[e.label] for e in examples], dtype=torch.long)


def _encode(
    examples: Sequence[Example], labels: list[str], dims: FusionDims
) -> tuple[FusionBatch, torch.Tensor]:
    if not examples:
        raise InvalidInput("an empty example set cannot be trained or evaluated on", param="examples")
    return collate([e.features for e in examples], dims), _targets(examples, labels)


# ------------------------------------------------------------------------------------ training
def drop_modalities(batch: FusionBatch, *, p: float, generator: torch.Generator) -> FusionBatch:
    """Mark each present modality absent with probability ``p``, never emptying a row."""
    names = list(batch.present)
    present = torch.stack([batch.present[m] for m in names], dim=1)
    keep = present & (torch.rand(present.shape, generator=generator) >= p)
    keep = torch.where(keep.any(dim=1, keepdim=True), keep, present)
    return FusionBatch(
        batch.pooled, {m: keep[:, i] for i, m in enumerate(names)}, batch.tokens, batch.token_mask
    )


def _train_epoch(
    head,
    opt,
    data: FusionBatch,
    y: torch.Tensor,
    *,
    batch_size: int,
    modality_dropout: float,
    generator: torch.Generator,
) -> float:
    head.train()
    order, total = torch.randperm(len(y), generator=generator), 0.0
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]
        batch = drop_modalities(data.select(idx), p=modality_dropout, generator=generator)
        loss = nn.functional.cross_entropy(head(batch), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(y)


@torch.no_grad()
def evaluate(head: nn.Module, data: FusionBatch, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode."""
    head.eval()
    logits = head(data)
    loss = nn.functional.cross_entropy(logits, y).item()
    return loss, (logits.argmax(dim=1) == y).float().mean().item()


def _better(stats: EpochStats, best: EpochStats | None) -> bool:
    if best is None:
        return True
    return (stats.val_accuracy, -stats.val_loss) > (best.val_accuracy, -best.val_loss)


def train_head(
    kind: str,
    train: Sequence[Example],
    val: Sequence[Example],
    *,
    dims: FusionDims,
    labels: list[str],
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    modality_dropout: float = 0.2,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """AdamW + cross-entropy; keeps the weights of the best validation accuracy (ties: lower loss)."""
    if epochs < 1:
        raise InvalidInput(f"epochs must be >= 1, got {epochs}", param="epochs")
    train_data, y_train = _encode(train, labels, dims)
    val_data, y_val = _encode(val, labels, dims)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        head = build_head(kind, dims=dims, num_labels=len(labels))
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-2)
        history, best, best_state = [], None, None
        for epoch in range(1, epochs + 1):
            train_loss = _train_epoch(
                head,
                opt,
                train_data,
                y_train,
                batch_size=batch_size,
                modality_dropout=modality_dropout,
                generator=generator,
            )
            stats = EpochStats(epoch, train_loss, *evaluate(head, val_data, y_val))
            history.append(stats)
            if _better(stats, best):
                best, best_state = stats, copy.deepcopy(head.state_dict())
            if on_epoch is not None:
                on_epoch(stats)
    head.load_state_dict(best_state)
    return TrainResult(
        head=head.eval(), history=history, best_epoch=best.epoch, val_accuracy=best.val_accuracy
    )


# ----------------------------------------------------------------------------------- baselines
def _pooled_rows(examples: Sequence[Example], m: str, labels: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [e for e in examples if m in e.features]
    x = (
        torch.tensor(np.stack([np.asarray(e.features[m].pooled, np.float32) for e in rows]))
        if rows
        else torch.zeros(0, 0)
    )
    return x, _targets(rows, labels)


def linear_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    num_labels: int,
    seed: int = 0,
    steps: int = 300,
    weight_decay: float = 1e-3,
) -> float:
    """Multinomial logistic regression on standardised features (full-batch Adam); val accuracy."""
    mean, std = x_train.mean(0), x_train.std(0, unbiased=False).clamp_min(1e-6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = nn.Linear(x_train.shape[1], num_labels)
    opt = torch.optim.Adam(probe.parameters(), lr=0.05, weight_decay=weight_decay)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(probe((x_train - mean) / std), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (probe((x_val - mean) / std).argmax(1) == y_val).float().mean().item()


def single_modality_probes(
    train: Sequence[Example], val: Sequence[Example], *, labels: list[str], dims: FusionDims, seed: int = 0
) -> dict[str, ProbeResult]:
    """A linear probe per modality on its pooled features alone, trained and scored only on the rows
    where that modality is present (``n_train``/``n_val`` say how many). A modality with no train or
    val rows scores NaN."""
    results = {}
    for m in dims.modalities:
        (xt, yt), (xv, yv) = _pooled_rows(train, m, labels), _pooled_rows(val, m, labels)
        acc = math.nan
        if len(yt) and len(yv):
            acc = linear_probe(xt, yt, xv, yv, num_labels=len(labels), seed=seed)
        results[m] = ProbeResult(accuracy=acc, n_train=len(yt), n_val=len(yv))
    return results


def single_modality_baselines(
    train: Sequence[Example], val: Sequence[Example], *, labels: list[str], dims: FusionDims, seed: int = 0
) -> dict[str, float]:
    """Held-out accuracy per modality (present rows only; see ``single_modality_probes`` for counts).
    Modalities with no train or val rows are left out, so the values are always finite (JSON-safe)."""
    probes = single_modality_probes(train, val, labels=labels, dims=dims, seed=seed)
    return {m: r.accuracy for m, r in probes.items() if not math.isnan(r.accuracy)}


def held_out_accuracy(
    head: nn.Module, examples: Sequence[Example], *, labels: list[str], dims: FusionDims
) -> float:
    """Accuracy on examples used neither for training nor for picking the epoch (a test split)."""
    data, y = _encode(examples, labels, dims)
    with torch.no_grad():
        return evaluate(head, data, y)[1]
