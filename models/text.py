"""Text encoders: sentence embeddings, L2-normalised, in a named embedding space.

Contract (``TextEmbedder``): ``model_id``, ``space``, ``dim``, ``embed(texts) -> [N, dim]``, ``warmup()``.
Texts are padded only to the longest text of their batch, and truncated to the encoder's token
limit; the work per text is bounded whatever its length.

Token-level features (for cross-modal attention fusion): ``token_dim`` and ``tokens(texts)``, one
``(T_i, token_dim)`` float32 array per text holding the last hidden states of its real tokens
(special tokens included, padding dropped).
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch

from models.runtime import Precision, autocast, effective_precision, l2_normalize


class TextEmbedder(Protocol):
    model_id: str
    space: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def warmup(self) -> None: ...


class TokenTextEmbedder(TextEmbedder, Protocol):
    """A text embedder that also exposes its token-level features."""

    token_dim: int

    def tokens(self, texts: Sequence[str]) -> list[np.ndarray]: ...


class _HFTextEncoder:
    """Shared tokenise -> forward -> normalise path for transformers text towers."""

    max_length = 256
    # Texts are cut to ``max_length * chars_per_token`` characters before tokenising: the tokenizer
    # would otherwise split a whole 10 MB input (seconds, hundreds of MB) only to keep its first
    # ``max_length`` tokens. A token of ordinary text spans ~4 characters, so the cut never changes
    # what the model sees unless its first ``max_length`` tokens average more than 32 characters
    # (long whitespace runs, words of 100+ letters), which only garbage does.
    chars_per_token = 32

    def __init__(self, *, tokenizer, model, model_id: str, space: str, dim: int, device: str, precision: Precision):
        self.tokenizer = tokenizer
        self.model = model.to(device).eval()
        self.model_id, self.space, self.dim = model_id, space, dim
        self.device = device
        self.precision = effective_precision(precision, device)
        self.token_dim = int(model.config.hidden_size)

    def _tokenize(self, texts: Sequence[str]):
        limit = self.max_length * self.chars_per_token
        return self.tokenizer(
            [text[:limit] for text in texts],
            padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt",
        ).to(self.device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self._tokenize(texts)
        with torch.inference_mode(), autocast(self.precision, self.device):
            return l2_normalize(self._pool(tokens))

    def _pool(self, tokens) -> torch.Tensor:
        raise NotImplementedError

    def tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Last hidden states of each text's real tokens: one ``(T_i, token_dim)`` float32 array per text."""
        tokens = self._tokenize(texts)
        with torch.inference_mode(), autocast(self.precision, self.device):
            hidden = self._hidden(tokens).float().cpu().numpy()
        mask = tokens["attention_mask"].bool().cpu().numpy()
        return [np.ascontiguousarray(h[m]) for h, m in zip(hidden, mask)]

    def _hidden(self, tokens) -> torch.Tensor:
        return self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state

    def warmup(self) -> None:
        self.embed(["warm up the text encoder"])


class MiniLMEncoder(_HFTextEncoder):
    """Sentence-transformers style encoder (BERT + mean pooling), e.g. all-MiniLM-L6-v2."""

    @classmethod
    def load(cls, path, *, model_id: str, device: str = "cpu", precision: Precision = "fp32") -> "MiniLMEncoder":
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(str(path))
        return cls(
            tokenizer=AutoTokenizer.from_pretrained(str(path)),
            model=model,
            model_id=model_id,
            space=f"text:{model_id}",
            dim=model.config.hidden_size,
            device=device,
            precision=precision,
        )

    def _pool(self, tokens) -> torch.Tensor:
        hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class CLIPTextEncoder(_HFTextEncoder):
    """The text tower of a CLIP checkpoint (hub id or local directory)."""

    max_length = 77

    @classmethod
    def load(cls, path, *, model_id: str, device: str = "cpu", precision: Precision = "fp32") -> "CLIPTextEncoder":
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        model = CLIPTextModelWithProjection.from_pretrained(str(path))
        return cls(
            tokenizer=AutoTokenizer.from_pretrained(str(path)),
            model=model,
            model_id=model_id,
            space=clip_space(model_id),
            dim=model.config.projection_dim,
            device=device,
            precision=precision,
        )

    def _pool(self, tokens) -> torch.Tensor:
        return self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).text_embeds


def clip_space(model_id: str) -> str:
    """Image and text towers of one CLIP checkpoint share this space."""
    return f"clip:{model_id}"
