"""Text encoders: sentence embeddings, L2-normalised, in a named embedding space.

Contract (``TextEmbedder``): ``model_id``, ``space``, ``dim``, ``embed(texts) -> [N, dim]``, ``warmup()``.
Texts are padded only to the longest text of their batch, and truncated to the encoder's token
limit; the work per text is bounded whatever its length.

Token-level features (for cross-modal attention fusion): ``token_dim`` and ``tokens(texts)``, one
``(T_i, token_dim)`` float32 array per text holding the last hidden states of its real tokens
(special tokens included, padding dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from models import accel
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

    def __init__(
        self, *, tokenizer, model, model_id: str, space: str, dim: int, device: str, precision: Precision
    ):
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
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
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
        return self.model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).last_hidden_state

    def warmup(self) -> None:
        self.embed(["warm up the text encoder"])


class _LastHidden(torch.nn.Module):
    """A transformers encoder as ``(input_ids, attention_mask) -> last_hidden_state`` (for export)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class MiniLMEncoder(_HFTextEncoder):
    """Sentence-transformers style encoder (BERT + mean pooling), e.g. all-MiniLM-L6-v2; its encoder
    runs on torch or on a compiled CPU runtime (``models.accel``)."""

    runtime: accel.Runtime = "torch"
    _compiled = None

    @classmethod
    def load(
        cls,
        path,
        *,
        model_id: str,
        device: str = "cpu",
        precision: Precision | str = "fp32",
        runtime: accel.Runtime = "torch",
    ) -> MiniLMEncoder:
        from transformers import AutoModel, AutoTokenizer

        if runtime != "torch" and device != "cpu":
            runtime = "torch"
        # the eager attention exports to plain ONNX ops; the fused SDPA path does not trace as cleanly
        export_kwargs = {"attn_implementation": "eager"} if runtime != "torch" else {}
        model = AutoModel.from_pretrained(str(path), **export_kwargs)
        obj = cls(
            tokenizer=AutoTokenizer.from_pretrained(str(path)),
            model=model,
            model_id=model_id,
            space=f"text:{model_id}",
            dim=model.config.hidden_size,
            device=device,
            precision=precision if runtime == "torch" else "fp32",
        )
        if runtime != "torch":
            obj.compile(runtime, accel.resolve_precision(runtime, precision), path)
        return obj

    def compile(self, runtime: accel.Runtime, precision: str, path) -> None:
        """Export the encoder to ONNX (cached) and run it on ``runtime``; int8 quantises its weights
        (dynamic: activation ranges are taken per call, so no calibration set is needed)."""
        example = self.tokenizer(
            ["an example sentence", "a second one"], padding="longest", return_tensors="pt"
        )
        onnx = accel.export_onnx(
            _LastHidden(self.model),
            (example["input_ids"], example["attention_mask"]),
            names=("input_ids", "attention_mask", "hidden"),
            dynamic_axes={
                name: {0: "batch", 1: "tokens"} for name in ("input_ids", "attention_mask", "hidden")
            },
            key=f"minilm-{accel.fingerprint(path)}",
        )
        if precision == "int8":
            onnx = accel.quantize_int8(onnx, mode="dynamic")
        self._compiled = accel.compile_onnx(
            onnx, runtime=runtime, precision=precision, threads=torch.get_num_threads()
        )
        self.runtime, self.compiled_precision = runtime, precision

    def _hidden(self, tokens) -> torch.Tensor:
        if self._compiled is None:
            return super()._hidden(tokens)
        return torch.from_numpy(
            self._compiled(
                input_ids=tokens["input_ids"].numpy(), attention_mask=tokens["attention_mask"].numpy()
            )
        )

    def _pool(self, tokens) -> torch.Tensor:
        hidden = self._hidden(tokens)
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class CLIPTextEncoder(_HFTextEncoder):
    """The text tower of a CLIP checkpoint (hub id or local directory)."""

    max_length = 77

    @classmethod
    def load(
        cls, path, *, model_id: str, device: str = "cpu", precision: Precision = "fp32"
    ) -> CLIPTextEncoder:
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


class ConSEQueryEncoder:
    """Query-side ConSE: a text lands in the span of the class-prompt embeddings that ConSE places
    images in. Its cosines to the class prompts are softmaxed (``temperature``), its ``top_t``
    prompts are weighted by them, and the result is mixed with the raw sentence vector
    (``mix`` = weight of the raw vector; 0 = projection only). Same space, model and token features
    as the wrapped encoder: only the pooled embedding moves."""

    def __init__(
        self,
        *,
        base: TextEmbedder,
        class_embeddings: np.ndarray,
        top_t: int = 10,
        temperature: float = 0.05,
        mix: float = 0.0,
    ):
        if not 0.0 <= mix <= 1.0 or temperature <= 0 or top_t < 1:
            raise ValueError("query ConSE needs 0 <= mix <= 1, temperature > 0 and top_t >= 1")
        self.base = base
        self.class_embeddings = torch.from_numpy(np.ascontiguousarray(class_embeddings, dtype=np.float32))
        self.top_t, self.temperature, self.mix = min(top_t, len(class_embeddings)), temperature, mix
        self.model_id, self.space, self.dim = base.model_id, base.space, base.dim

    @property
    def token_dim(self) -> int:
        return self.base.token_dim

    def tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self.base.tokens(texts)

    def warmup(self) -> None:
        self.embed(["warm up the text encoder"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.project(self.base.embed(texts))

    def project(self, raw: np.ndarray) -> np.ndarray:
        """Raw L2-normalised sentence vectors ``[N, dim]`` -> their query-side ConSE vectors."""
        raw_t = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
        sims, idx = (raw_t @ self.class_embeddings.T).topk(self.top_t, dim=-1)
        weights = (sims / self.temperature).softmax(-1)
        projected = torch.nn.functional.normalize(
            torch.einsum("nt,ntd->nd", weights, self.class_embeddings[idx]), dim=-1
        )
        return l2_normalize(self.mix * raw_t + (1.0 - self.mix) * projected)


def prompt_embeddings(
    text: TextEmbedder, labels: Sequence[str], templates: Sequence[str], *, batch_size: int = 64
) -> np.ndarray:
    """One L2-normalised vector per label: the mean of its prompts' embeddings, one prompt per
    template (a prompt ensemble; a single template is the plain prompt)."""
    if not templates or any("{}" not in t for t in templates):
        raise ValueError("every template must contain '{}' where the label goes")
    prompts = [t.format(label) for label in labels for t in templates]
    rows = np.concatenate(
        [text.embed(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
    )
    return l2_normalize(torch.from_numpy(rows.reshape(len(labels), len(templates), -1).mean(1)))


def clip_space(model_id: str) -> str:
    """Image and text towers of one CLIP checkpoint share this space."""
    return f"clip:{model_id}"
