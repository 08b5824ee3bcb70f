"""Fusion heads: turn per-modality encoder outputs into one classification.

Three kinds (``HEAD_KINDS``), all taking a :class:`FusionBatch` and returning logits ``[B, labels]``:

- ``early``: project each modality's pooled embedding, swap an absent modality for a learned
  placeholder, concatenate with the presence bits and classify with an MLP.
- ``late``: one small classifier per modality; their logits are averaged with learned modality
  weights (softmax), renormalised over the modalities present in each row.
- ``attention``: cross-modal attention. A learned query token plus the text tokens attend over the
  image tokens and over the audio tokens (``nn.MultiheadAttention`` with a key padding mask); a
  branch whose key modality is absent in a row contributes exactly zero for that row.

Every head reads an absent modality only through its presence bit, so changing an absent
modality's features never changes the output. Heads are trained offline (``models.fusion_train``)
and stored by id as ``<store>/<head_id>/{weights.safetensors, meta.json}``; loading never unpickles.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from models.errors import Incompatible, InvalidInput, NotFound

MODALITIES = ("image", "text", "audio")
_HEAD_ID = re.compile(r"[a-z0-9_-]{1,64}")
_WEIGHTS, _META = "weights.safetensors", "meta.json"


# ---------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ModalityFeatures:
    """One modality of one example: the encoder's pooled embedding and its token-level features."""

    pooled: np.ndarray  # (d_pooled,)
    tokens: np.ndarray  # (T, d_token); T may differ between examples


@dataclass(frozen=True)
class FusionDims:
    """Architecture dims. ``pooled``/``tokens`` list only the modalities the head was trained with."""

    pooled: dict[str, int]
    tokens: dict[str, int]
    hidden: int = 256
    heads: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not self.pooled or set(self.pooled) != set(self.tokens):
            raise InvalidInput(
                "FusionDims needs the same non-empty modalities in pooled and tokens", param="dims"
            )
        unknown = set(self.pooled) - set(MODALITIES)
        if unknown:
            raise InvalidInput(
                f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}", param="dims"
            )
        if self.hidden % self.heads:
            raise InvalidInput(
                f"hidden ({self.hidden}) must be divisible by heads ({self.heads})", param="dims"
            )

    @property
    def modalities(self) -> tuple[str, ...]:
        """The head's modalities, in the canonical ``MODALITIES`` order."""
        return tuple(m for m in MODALITIES if m in self.pooled)


@dataclass
class FusionBatch:
    """Collated, padded tensors. Absent modalities are zeros with ``present`` False."""

    pooled: dict[str, Tensor]  # (B, d)
    present: dict[str, Tensor]  # (B,) bool
    tokens: dict[str, Tensor]  # (B, T, d), right-padded
    token_mask: dict[str, Tensor]  # (B, T) bool, True = real token

    def to(self, device: torch.device | str) -> FusionBatch:
        return FusionBatch(*({m: t.to(device) for m, t in part.items()} for part in self._parts()))

    def select(self, index: Tensor) -> FusionBatch:
        """Rows ``index`` of every tensor (used to cut mini-batches out of a collated set)."""
        return FusionBatch(*({m: t[index] for m, t in part.items()} for part in self._parts()))

    def _parts(self) -> tuple[dict[str, Tensor], ...]:
        return self.pooled, self.present, self.tokens, self.token_mask


def _check_feature(name: str, feat: ModalityFeatures, dims: FusionDims) -> None:
    pooled, tokens = np.asarray(feat.pooled), np.asarray(feat.tokens)
    want_p, want_t = dims.pooled[name], dims.tokens[name]
    if pooled.shape != (want_p,):
        raise Incompatible(
            f"{name} pooled features: expected shape ({want_p},), got {pooled.shape}", param=name
        )
    if tokens.ndim != 2 or tokens.shape[1] != want_t:
        raise Incompatible(f"{name} tokens: expected shape (T, {want_t}), got {tokens.shape}", param=name)
    if not (np.isfinite(pooled).all() and np.isfinite(tokens).all()):
        raise InvalidInput(f"{name} features contain NaN or infinity", param=name)


def _check_row(row: dict[str, ModalityFeatures], dims: FusionDims) -> None:
    unknown = set(row) - set(MODALITIES)
    if unknown:
        raise InvalidInput(
            f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}", param="features"
        )
    for name in dims.modalities:
        if name in row:
            _check_feature(name, row[name], dims)


def _collate_modality(rows: list[dict[str, ModalityFeatures]], name: str, dims: FusionDims):
    n, longest = len(rows), max([len(r[name].tokens) for r in rows if name in r] + [1])
    pooled = np.zeros((n, dims.pooled[name]), np.float32)
    tokens = np.zeros((n, longest, dims.tokens[name]), np.float32)
    mask = np.zeros((n, longest), bool)
    for i, row in enumerate(rows):
        if name in row:
            t = len(row[name].tokens)
            pooled[i], tokens[i, :t], mask[i, :t] = row[name].pooled, row[name].tokens, True
    present = torch.tensor([name in r for r in rows], dtype=torch.bool)
    return torch.from_numpy(pooled), present, torch.from_numpy(tokens), torch.from_numpy(mask)


def collate(rows: list[dict[str, ModalityFeatures]], dims: FusionDims) -> FusionBatch:
    """Stack rows into padded tensors for the head's modalities (others in a row are ignored).

    Raises ``Incompatible(param=<modality>)`` when a feature's shape differs from ``dims``.
    """
    if not rows:
        raise InvalidInput("no rows to collate", param="features")
    for row in rows:
        _check_row(row, dims)
    batch = FusionBatch({}, {}, {}, {})
    for name in dims.modalities:
        parts = _collate_modality(rows, name, dims)
        for target, value in zip(batch._parts(), parts):
            target[name] = value
    return batch


# ----------------------------------------------------------------------------------------- heads
def _pooled_proj(d_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU())


def _presence(batch: FusionBatch, modalities: tuple[str, ...]) -> Tensor:
    return torch.stack([batch.present[m] for m in modalities], dim=1)  # (B, M) bool


class EarlyFusion(nn.Module):
    """Concatenate projected pooled embeddings (learned placeholder when absent) + presence bits."""

    def __init__(self, *, dims: FusionDims, num_labels: int) -> None:
        super().__init__()
        self.modalities = dims.modalities
        self.proj = nn.ModuleDict({m: _pooled_proj(dims.pooled[m], dims.hidden) for m in self.modalities})
        self.placeholder = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(dims.hidden)) for m in self.modalities}
        )
        width = len(self.modalities) * (dims.hidden + 1)
        self.mlp = nn.Sequential(
            nn.Dropout(dims.dropout),
            nn.Linear(width, dims.hidden),
            nn.GELU(),
            nn.Dropout(dims.dropout),
            nn.Linear(dims.hidden, num_labels),
        )

    def forward(self, batch: FusionBatch) -> Tensor:
        parts = []
        for m in self.modalities:
            here = batch.present[m].unsqueeze(1)
            parts.append(torch.where(here, self.proj[m](batch.pooled[m]), self.placeholder[m]))
        parts.append(_presence(batch, self.modalities).float())
        return self.mlp(torch.cat(parts, dim=1))


class LateFusion(nn.Module):
    """Per-modality classifiers; logits averaged with softmax modality weights over present ones."""

    def __init__(self, *, dims: FusionDims, num_labels: int) -> None:
        super().__init__()
        self.modalities = dims.modalities
        self.heads = nn.ModuleDict({m: self._head(dims.pooled[m], dims, num_labels) for m in self.modalities})
        self.weight_logits = nn.Parameter(torch.zeros(len(self.modalities)))

    @staticmethod
    def _head(d_in: int, dims: FusionDims, num_labels: int) -> nn.Sequential:
        return nn.Sequential(
            _pooled_proj(d_in, dims.hidden), nn.Dropout(dims.dropout), nn.Linear(dims.hidden, num_labels)
        )

    def modality_weights(self, present: Tensor) -> Tensor:
        """(B, M) weights: softmax of the learned logits restricted to present modalities (rows
        with none present get all-zero weights, hence zero logits, never NaN)."""
        w = torch.exp(self.weight_logits - self.weight_logits.max()) * present.float()
        return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, batch: FusionBatch) -> Tensor:
        logits = torch.stack([self.heads[m](batch.pooled[m]) for m in self.modalities], dim=1)  # (B, M, L)
        present = _presence(batch, self.modalities)
        logits = torch.where(present.unsqueeze(-1), logits, torch.zeros_like(logits))
        return (self.modality_weights(present).unsqueeze(-1) * logits).sum(dim=1)


def _token_proj(d_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden))


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    w = mask.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def _real_tokens(batch: FusionBatch, m: str) -> Tensor:
    """(B, T) True where a token is real AND its modality is present in that row."""
    return batch.token_mask[m] & batch.present[m].unsqueeze(1)


class CrossAttentionFusion(nn.Module):
    """Text-to-vision and text-to-audio cross-attention.

    Queries = [learned query token] + projected text tokens (text tokens masked out when text is
    absent, so the learned query alone asks). Each key modality (image, audio) gets its own
    ``nn.MultiheadAttention``. A row whose key modality is absent (or has no tokens) would have an
    all-masked key row, which yields NaN: its first key is unmasked for the call and that branch's
    output is replaced by zeros with ``torch.where``, so it contributes nothing. The query
    outputs are mean-pooled, joined with the mean text token and the presence bits, and classified.
    """

    def __init__(self, *, dims: FusionDims, num_labels: int) -> None:
        super().__init__()
        self.modalities, h = dims.modalities, dims.hidden
        self.key_modalities = tuple(m for m in self.modalities if m != "text")
        self.query = nn.Parameter(torch.randn(1, 1, h) * 0.02)
        self.proj = nn.ModuleDict({m: _token_proj(dims.tokens[m], h) for m in self.modalities})
        self.attn = nn.ModuleDict(
            {
                m: nn.MultiheadAttention(h, dims.heads, dropout=dims.dropout, batch_first=True)
                for m in self.key_modalities
            }
        )
        width = h * (len(self.key_modalities) + ("text" in self.modalities)) + len(self.modalities)
        self.classifier = nn.Sequential(
            nn.LayerNorm(width),
            nn.Dropout(dims.dropout),
            nn.Linear(width, h),
            nn.GELU(),
            nn.Dropout(dims.dropout),
            nn.Linear(h, num_labels),
        )

    def _queries(self, batch: FusionBatch) -> tuple[Tensor, Tensor]:
        rows = next(iter(batch.present.values())).shape[0]
        query = self.query.expand(rows, 1, -1)
        query_mask = torch.ones(rows, 1, dtype=torch.bool, device=query.device)
        if "text" not in self.modalities:
            return query, query_mask
        text = self.proj["text"](batch.tokens["text"])
        return torch.cat([query, text], dim=1), torch.cat([query_mask, _real_tokens(batch, "text")], dim=1)

    def _branch(self, m: str, queries: Tensor, query_mask: Tensor, batch: FusionBatch) -> Tensor:
        real = _real_tokens(batch, m)
        has_keys = real.any(dim=1)
        padding = ~real
        padding[:, 0] &= has_keys  # keep one key open in empty rows so softmax stays finite
        keys = self.proj[m](batch.tokens[m])
        out, _ = self.attn[m](queries, keys, keys, key_padding_mask=padding, need_weights=False)
        pooled = _masked_mean(out, query_mask)
        return torch.where(has_keys.unsqueeze(1), pooled, torch.zeros_like(pooled))

    def forward(self, batch: FusionBatch) -> Tensor:
        queries, query_mask = self._queries(batch)
        parts = [self._branch(m, queries, query_mask, batch) for m in self.key_modalities]
        if "text" in self.modalities:
            text = _masked_mean(queries[:, 1:], query_mask[:, 1:])
            parts.append(torch.where(query_mask[:, 1:].any(1, keepdim=True), text, torch.zeros_like(text)))
        parts.append(_presence(batch, self.modalities).float())
        return self.classifier(torch.cat(parts, dim=1))


HEAD_KINDS: dict[str, type[nn.Module]] = {
    "early": EarlyFusion,
    "late": LateFusion,
    "attention": CrossAttentionFusion,
}


def build_head(kind: str, *, dims: FusionDims, num_labels: int) -> nn.Module:
    if kind not in HEAD_KINDS:
        raise InvalidInput(
            f"unknown fusion head kind {kind!r}; choose one of {sorted(HEAD_KINDS)}", param="kind"
        )
    if num_labels < 2:
        raise InvalidInput(f"a classifier needs at least 2 labels, got {num_labels}", param="labels")
    return HEAD_KINDS[kind](dims=dims, num_labels=num_labels)


# ------------------------------------------------------------------------------------ checkpoints
def mmserve_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmserve")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class HeadMeta:
    head_id: str
    kind: str
    labels: list[str]
    dims: FusionDims
    encoders: dict[str, dict] = field(default_factory=dict)  # modality -> {"id": ..., "version": ...}
    metrics: dict = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))
    mmserve_version: str = field(default_factory=mmserve_version)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> HeadMeta:
        return cls(**{**data, "dims": FusionDims(**data["dims"])})


def _validate_id(head_id: str) -> str:
    if not isinstance(head_id, str) or not _HEAD_ID.fullmatch(head_id):
        raise InvalidInput(
            f"invalid head id {head_id!r}: use 1-64 characters from [a-z0-9_-]", param="head_id"
        )
    return head_id


def _head_dir(store: Path, head_id: str) -> Path:
    """``store/head_id``, refusing ids that are not plain names or that resolve outside the store."""
    root = Path(store).resolve()
    target = (root / _validate_id(head_id)).resolve()
    if target.parent != root:
        raise InvalidInput(f"head id {head_id!r} resolves outside the head store", param="head_id")
    return target


def _write_files(tmp: Path, head: nn.Module, meta: HeadMeta) -> None:
    from safetensors.torch import save_file

    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(tmp / _WEIGHTS))
    (tmp / _META).write_text(json.dumps(meta.to_json(), indent=2, sort_keys=True))


def save_checkpoint(store: Path, head: nn.Module, meta: HeadMeta, *, overwrite: bool = False) -> Path:
    """Write ``store/<head_id>/`` atomically (a temp dir in the store, then one rename)."""
    target = _head_dir(store, meta.head_id)
    if meta.kind not in HEAD_KINDS:
        raise InvalidInput(f"unknown fusion head kind {meta.kind!r}", param="kind")
    if target.exists() and not overwrite:
        raise InvalidInput(f"head {meta.head_id!r} already exists (pass overwrite=True)", param="head_id")
    tmp = target.parent / f".tmp-{meta.head_id}-{uuid.uuid4().hex}"
    try:
        _write_files(tmp, head, meta)
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        os.rename(new, target)
        return
    old = target.parent / f".old-{target.name}-{uuid.uuid4().hex}"
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _read_meta(directory: Path) -> HeadMeta:
    try:
        meta = HeadMeta.from_json(json.loads((directory / _META).read_text()))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise Incompatible(
            f"head {directory.name!r} has an unreadable meta.json: {exc}", param="head_id"
        ) from exc
    if meta.head_id != directory.name or meta.kind not in HEAD_KINDS:
        raise Incompatible(
            f"head {directory.name!r}: meta.json names {meta.head_id!r} of kind {meta.kind!r}",
            param="head_id",
        )
    return meta


def load_checkpoint(store: Path, head_id: str) -> tuple[nn.Module, HeadMeta]:
    """Rebuild a head from its meta and load its tensors (safetensors: no pickle). Eval mode."""
    from safetensors.torch import load_file

    directory = _head_dir(store, head_id)
    if not (directory / _META).is_file():
        raise NotFound(f"fusion head '{head_id}' not found", param="head")
    meta = _read_meta(directory)
    head = build_head(meta.kind, dims=meta.dims, num_labels=len(meta.labels))
    try:
        head.load_state_dict(load_file(str(directory / _WEIGHTS)), strict=True)
    except (OSError, RuntimeError) as exc:
        raise Incompatible(
            f"head {head_id!r}: weights do not match its meta.json: {exc}", param="head_id"
        ) from exc
    return head.eval(), meta


def list_heads(store: Path) -> list[HeadMeta]:
    """Metas of every well-formed head in the store, sorted by id (temp dirs and junk skipped)."""
    root = Path(store)
    if not root.is_dir():
        return []
    metas = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and _HEAD_ID.fullmatch(d.name) and (d / _META).is_file():
            try:
                metas.append(_read_meta(d))
            except Incompatible:
                continue
    return metas


# ---------------------------------------------------------------------------------------- serving
def _encoder_problem(meta: HeadMeta, m: str, running: dict) -> str | None:
    trained_id = meta.encoders.get(m, {}).get("id")
    want_p, want_t = meta.dims.pooled[m], meta.dims.tokens[m]
    same_id = trained_id is None or running.get("id") == trained_id
    same_p = running.get("pooled_dim", want_p) == want_p
    same_t = running.get("token_dim", want_t) == want_t
    if same_id and same_p and same_t:
        return None
    return (
        f"head {meta.head_id!r} was trained on {m} encoder {trained_id!r} ({want_p}-d, tokens {want_t}-d) "
        f"but the service runs {running.get('id')!r} ({running.get('pooled_dim')}-d, "
        f"tokens {running.get('token_dim')}-d)"
    )


def check_compatible(meta: HeadMeta, running: dict[str, dict]) -> None:
    """Raise ``Incompatible`` when a running encoder's id or dims differ from the head's training.

    ``running``: modality -> {"id", "pooled_dim", "token_dim"}. A head modality that is not running
    is fine (it is treated as absent) unless none of the head's modalities run.
    """
    shared = [m for m in meta.dims.modalities if m in running]
    if not shared:
        raise Incompatible(
            f"head {meta.head_id!r} needs one of {list(meta.dims.modalities)} but the service "
            f"runs only {sorted(running)}",
            param="head_id",
        )
    problems = [(m, p) for m in shared if (p := _encoder_problem(meta, m, running[m]))]
    if problems:
        raise Incompatible("; ".join(p for _, p in problems), param=problems[0][0])


def accepted_inputs(meta: HeadMeta) -> set[str]:
    """The modalities a head takes; any of them may be missing (masked), not all at once."""
    return set(meta.dims.modalities)


def check_rows(meta: HeadMeta, rows: list[dict[str, ModalityFeatures]]) -> None:
    if not rows:
        raise InvalidInput("no rows to classify", param="features")
    accepted = accepted_inputs(meta)
    for i, row in enumerate(rows):
        if not accepted & set(row):
            raise InvalidInput(
                f"row {i} has {sorted(row)} but head {meta.head_id!r} needs at least one of "
                f"{sorted(accepted)}",
                param="features",
            )


def _row_result(probs: np.ndarray, labels: list[str], missing: list[str]) -> dict:
    order = np.argsort(-probs, kind="stable")
    scores = [{"label": labels[j], "score": float(probs[j])} for j in order]
    return {"label": scores[0]["label"], "scores": scores, "missing": missing}


def predict(head: nn.Module, meta: HeadMeta, rows: list[dict[str, ModalityFeatures]]) -> list[dict]:
    """Softmax scores per row, best first, plus the head modalities the row lacked."""
    check_rows(meta, rows)
    device = next(head.parameters()).device
    batch = collate(rows, meta.dims).to(device)
    head.eval()
    with torch.inference_mode():
        probs = torch.softmax(head(batch).float(), dim=-1).cpu().numpy()
    return [
        _row_result(p, meta.labels, [m for m in meta.dims.modalities if m not in row])
        for p, row in zip(probs, rows)
    ]
