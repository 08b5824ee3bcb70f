"""What ``tools.finetune``'s shared Ray Train loop needs to know about the model it trains (Ray-free).

A *family* is a small, picklable strategy object: ``build`` the trainable module (on each worker),
``optimizer`` over what it trains, one contrastive ``step`` on a batch of Ray Data rows,
``evaluate`` (R@1/R@5) on a prepared split, the current ``scale`` (the learnable temperature), and
``select_on_val``: whether the loop keeps the best epoch on val and stops early (the adapter).

- ``AdapterFamily``: the offline default, trained heads over cached frozen features (``models.adapter``).
- ``ClipFamily``: a transformers ``CLIPModel`` (hub id or local directory), fully fine-tuned or with
  a locked image tower (LiT: ``lock_image``), with CLIP's symmetric InfoNCE over its own learnable
  ``logit_scale``. Its checkpoint is a ``save_pretrained`` directory (model, tokenizer, image
  processor) plus ``mmserve-finetune.json``, loadable by the existing CLIP path of the encoders.

The CLIP path is **plumbing only here**: no CLIP weights are available offline, so it is tested with
tiny random CLIPs (``tests/checkpoints.py``); nothing is claimed about the quality of its result.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import adapter

CLIP_META_FILE = "mmserve-finetune.json"
CLIP_FORMAT = "mmserve-clip-finetune/1"


def _core(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") else model


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


# ----------------------------------------------------------------------------------- adapter
@dataclass(frozen=True)
class AdapterFamily:
    """The adapter heads (``models.adapter``); splits are ``FeatureSet.__dict__``."""

    dims: adapter.AdapterDims
    name: str = "adapter"
    select_on_val: bool = True  # keep the best val epoch (epoch 0 = the base space), stop early

    def build(self) -> nn.Module:
        return adapter.AdapterHeads(self.dims)

    def optimizer(self, module: nn.Module, config: adapter.TrainConfig) -> torch.optim.Optimizer:
        return adapter.make_optimizer(module, config)

    def step(
        self, model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer, config: adapter.TrainConfig
    ) -> float:
        tensors = {
            "image": batch["image"].float(),
            "base": batch["base"].float(),
            "tokens": batch["tokens"].float(),
            "mask": batch["mask"].float(),
            "group": batch["group"].long(),
        }
        return adapter.train_step(model, tensors, optimizer, group_positives=config.group_positives)

    def evaluate(self, module: nn.Module, split: dict) -> dict[str, float]:
        return adapter.evaluate(module, adapter.FeatureSet(**split))

    def scale(self, module: nn.Module) -> float:
        return float(module.scale().detach())


# ----------------------------------------------------------------------------------- CLIP
@dataclass(frozen=True)
class ClipFamily:
    """A transformers ``CLIPModel`` from ``base`` (hub id or directory); ``lock_image`` freezes the
    image tower and its projection (LiT), so only the text side and the temperature train."""

    base: str
    lock_image: bool = False
    name: str = "clip"
    select_on_val: bool = False  # plumbing only: the last epoch is kept, as before

    def build(self) -> nn.Module:
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(self.base)
        if self.lock_image:
            for part in (model.vision_model, model.visual_projection):
                part.requires_grad_(False)
                part.eval()
        return model

    def optimizer(self, module: nn.Module, config: adapter.TrainConfig) -> torch.optim.Optimizer:
        # only what trains: a locked tower gets neither updates nor weight decay
        return torch.optim.AdamW(_trainable(module), lr=config.lr, weight_decay=config.weight_decay)

    def step(
        self, model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer, config: adapter.TrainConfig
    ) -> float:
        out = model(
            input_ids=batch["input_ids"].long(),
            attention_mask=batch["attention_mask"].long(),
            pixel_values=batch["pixel_values"].float(),
        )
        groups = batch["group"].long() if config.group_positives else None
        loss = adapter.clip_loss(out.image_embeds, out.text_embeds, self._scale(_core(model)), groups)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def evaluate(self, module: nn.Module, split: dict) -> dict[str, float]:
        image, text = clip_embed(module, split)
        return adapter.retrieval_metrics(image, text, split["image_of_text"])

    def scale(self, module: nn.Module) -> float:
        return float(self._scale(module).detach())

    @staticmethod
    def _scale(module: nn.Module) -> torch.Tensor:
        return module.logit_scale.exp().clamp(max=100.0)  # CLIP's learnable temperature, clamped as in CLIP


def clip_embed(module: nn.Module, split: dict, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Unit image and text embeddings of a prepared split (``clip_split``)."""
    was_training = module.training
    module.eval()
    images, texts = [], []
    with torch.no_grad():
        for i in range(0, len(split["pixel_values"]), batch_size):
            pixels = torch.from_numpy(split["pixel_values"][i : i + batch_size])
            images.append(module.visual_projection(module.vision_model(pixel_values=pixels).pooler_output))
        for i in range(0, len(split["input_ids"]), batch_size):
            ids = torch.from_numpy(split["input_ids"][i : i + batch_size])
            mask = torch.from_numpy(split["attention_mask"][i : i + batch_size])
            texts.append(
                module.text_projection(module.text_model(input_ids=ids, attention_mask=mask).pooler_output)
            )
    module.train(was_training)
    norm = lambda x: nn.functional.normalize(torch.cat(x), dim=-1).numpy()  # noqa: E731
    return norm(images), norm(texts)


def clip_split(pairs: Sequence[adapter.Pair], base: str, *, max_length: int = 77) -> dict[str, np.ndarray]:
    """Pixels of each distinct image (CLIP's image processor) and token ids of each caption (its
    tokenizer, padded to one length), with ``image_of_text`` and ``groups`` as in ``FeatureSet``."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from models.media import decode_image

    processor, tokenizer = AutoImageProcessor.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    images = sorted({p.image for p in pairs})
    pixels = processor(images=[decode_image(p.read_bytes()) for p in images], return_tensors="np")[
        "pixel_values"
    ]
    length = min(max_length, tokenizer.model_max_length)
    tokens = tokenizer(
        [p.caption for p in pairs],
        padding="max_length",
        truncation=True,
        max_length=length,
        return_tensors="np",
    )
    index = {p: i for i, p in enumerate(images)}
    group_ids = {g: i for i, g in enumerate(sorted({p.group for p in pairs}))}
    return {
        "pixel_values": pixels.astype(np.float32),
        "input_ids": tokens["input_ids"].astype(np.int64),
        "attention_mask": tokens["attention_mask"].astype(np.int64),
        "image_of_text": np.array([index[p.image] for p in pairs]),
        "groups": np.array([group_ids[p.group] for p in pairs]),
    }


def clip_rows(split: dict[str, np.ndarray]) -> list[dict]:
    """One training row per caption: its image's pixels, its tokens and its group."""
    return [
        {
            "pixel_values": split["pixel_values"][image],
            "input_ids": split["input_ids"][i],
            "attention_mask": split["attention_mask"][i],
            "group": int(split["groups"][i]),
        }
        for i, image in enumerate(split["image_of_text"])
    ]


def save_clip_checkpoint(
    out_dir: str | Path, module: nn.Module, *, family: ClipFamily, name: str, training: dict, metrics: dict
) -> dict:
    """Write ``out_dir`` atomically: ``save_pretrained`` of the model, the base's tokenizer and image
    processor, and ``mmserve-finetune.json`` (base, versions, training, R@1/R@5 before and after)."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    from models.text import clip_space

    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    module.save_pretrained(staging)
    AutoTokenizer.from_pretrained(family.base).save_pretrained(staging)
    AutoImageProcessor.from_pretrained(family.base).save_pretrained(staging)
    meta = {
        "format": CLIP_FORMAT,
        "name": name,
        "space": clip_space(str(out_dir)),
        "base": {
            "model": family.base,
            "family": "clip",
            "lock_image": family.lock_image,
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        },
        "dims": {"projection_dim": module.config.projection_dim},
        "logit_scale": float(ClipFamily._scale(module).detach()),
        "training": training,
        "metrics": metrics,
        "note": "plumbing tested with tiny random CLIPs only; no CLIP weights offline",
    }
    (staging / CLIP_META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    adapter._swap_in(staging, out_dir)
    return meta
