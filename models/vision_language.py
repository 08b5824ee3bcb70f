"""Vision-language backends: image captioning (BLIP, GIT) and visual question answering (BLIP, ViLT).

Contract (``VisionLanguageModel``), split into pre / core / post so a deployment can batch the core:
- ``settings(max_tokens=, num_beams=, top_k=) -> GenerationSettings``: a request's generation settings
  against the model's defaults and limits (``InvalidInput`` naming the parameter). Settings are
  hashable: requests with equal settings may share one batch.
- ``check_text(text) -> int``: refuses a prompt or question over the model's limit (or a missing
  question) before the request joins a batch, where one bad item would fail the others.
- ``preprocess(image, text) -> VLInput`` (pre): pixels and token ids of one request.
- ``generate(inputs, settings) -> list[VLOutput]`` (core + post): one batch, the same settings.
``run_batch(model, [(image, text), ...], settings)`` is pre + core + post in one call.

Images are RGB ``uint8`` arrays (H, W, 3) as ``models.media.decode_image`` returns them. ``text`` is
the caption's prompt (the caption starts with it; ``None`` for an unconditional caption) or the question.

One ``generate`` call per batch, with one exception: a captioning batch whose prompts have different
token lengths runs one call per length. BLIP's and GIT's text decoders take absolute positions that
ignore the attention mask, so padding a prompt would change its caption; VQA questions go through an
encoder and pad freely. ``stats`` counts the calls and their sizes (what a replica reports as batching).

ViLT answers by classification over its answer vocabulary (``config.id2label``): the top ``top_k``
answers with their softmax probabilities (ViLT was trained with per-answer sigmoids; the softmax keeps
that order and makes the probabilities a distribution). BLIP and GIT generate the text.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch

from models.errors import InvalidInput
from models.runtime import Precision, autocast, effective_precision

Task = Literal["caption", "vqa"]
Engine = Literal["blip", "vilt", "git"]

MAX_NEW_TOKENS = 256  # a ceiling on max_tokens for every model; a model's positions may lower it
MAX_BEAMS = 8
MAX_TOP_K = 20
MAX_TEXT_CHARS = 4096  # a prompt or question longer than this is refused before it is tokenised


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens: int = 30
    num_beams: int = 1
    top_k: int = 5  # answers returned by classifier engines (ViLT); generators return one


@dataclass(frozen=True)
class VLInput:
    """One request after preprocessing."""

    pixels: torch.Tensor  # [3, H, W] float, the model's own normalisation
    text: str | None
    text_ids: tuple[int, ...]  # the prompt or question, special tokens included; () for no prompt


@dataclass(frozen=True)
class ScoredAnswer:
    answer: str
    probability: float


@dataclass(frozen=True)
class VLOutput:
    text: str  # the caption (starting with the prompt when one was given) or the best answer
    tokens: int  # tokens the model produced (the prompt and special tokens not counted)
    prompt_tokens: int  # tokens of the prompt or question, special tokens included
    answers: tuple[ScoredAnswer, ...] = ()  # ViLT: the top_k answers, best first


@dataclass
class GenerateStats:
    """Batches the model ran: ``calls`` generate (or classify) calls over ``items`` inputs."""

    calls: int = 0
    items: int = 0
    largest: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, size: int) -> None:
        with self._lock:
            self.calls += 1
            self.items += size
            self.largest = max(self.largest, size)


class VisionLanguageModel(Protocol):
    model_id: str
    task: Task
    engine: Engine
    defaults: GenerationSettings
    max_text_tokens: int
    max_new_tokens: int
    text_param: str  # the request field the text comes from: "prompt" or "question"
    stats: GenerateStats

    def settings(
        self, *, max_tokens: int | None = None, num_beams: int | None = None, top_k: int | None = None
    ) -> GenerationSettings: ...

    def check_text(self, text: str | None) -> int: ...

    def preprocess(self, image: np.ndarray, text: str | None) -> VLInput: ...

    def generate(self, inputs: Sequence[VLInput], settings: GenerationSettings) -> list[VLOutput]: ...

    def warmup(self) -> None: ...


def run_batch(
    model: VisionLanguageModel, items: Sequence[tuple[np.ndarray, str | None]], settings: GenerationSettings
) -> list[VLOutput]:
    """Captions or answers for ``(image, prompt or question)`` pairs that share ``settings``."""
    return model.generate([model.preprocess(image, text) for image, text in items], settings)


def check_image(image: np.ndarray, *, param: str = "image") -> None:
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] > 0
        and image.shape[1] > 0
    ):
        raise InvalidInput(f"'{param}' must be an RGB image (H x W x 3, uint8)", param=param)


def _bounded(value: int | None, default: int, *, low: int, high: int, param: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"'{param}' must be an integer from {low} to {high}", param=param)
    return value


class _HFVisionLanguage:
    """Device, precision, processor and limits shared by the transformers vision-language backends."""

    task: Task
    engine: Engine

    model_class = ""  # the transformers class that loads this engine's checkpoints
    model_type = ""  # what the checkpoint's config.json must say

    @classmethod
    def load(
        cls,
        path,
        *,
        model_id: str,
        device: str = "cpu",
        precision: Precision = "fp32",
        defaults: GenerationSettings = GenerationSettings(),
    ):
        import transformers
        from transformers import AutoProcessor

        _expect_model_type(path, cls.model_type, model_id)
        model = getattr(transformers, cls.model_class).from_pretrained(str(path))
        text_config = getattr(model.config, "text_config", model.config)
        return cls(
            model=model,
            processor=AutoProcessor.from_pretrained(str(path)),
            model_id=model_id,
            device=device,
            precision=precision,
            defaults=defaults,
            text_positions=text_config.max_position_embeddings,
        )

    def __init__(
        self,
        *,
        model,
        processor,
        model_id: str,
        device: str,
        precision: Precision,
        defaults: GenerationSettings,
        text_positions: int,
    ):
        self.model = model.to(device).eval()
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.model_id, self.device = model_id, device
        self.precision = effective_precision(precision, device)
        self.text_param = "prompt" if self.task == "caption" else "question"
        self.max_new_tokens, self.max_text_tokens = self._limits(text_positions)
        self.stats = GenerateStats()
        self.defaults = GenerationSettings()
        self.defaults = self.settings(
            max_tokens=defaults.max_tokens, num_beams=defaults.num_beams, top_k=defaults.top_k
        )

    def _limits(self, text_positions: int) -> tuple[int, int]:
        """(most new tokens, most prompt tokens): a caption's prompt and its continuation share the
        decoder's positions, half each; a question has the encoder's positions to itself."""
        new = min(MAX_NEW_TOKENS, text_positions // 2)
        prompt = text_positions - new if self.task == "caption" else text_positions
        return new, min(int(self.tokenizer.model_max_length), prompt)

    # ------------------------------------------------------------------------------------- pre
    def settings(
        self, *, max_tokens: int | None = None, num_beams: int | None = None, top_k: int | None = None
    ) -> GenerationSettings:
        base = self.defaults
        return GenerationSettings(
            max_tokens=_bounded(
                max_tokens, base.max_tokens, low=1, high=self.max_new_tokens, param="max_tokens"
            ),
            num_beams=_bounded(num_beams, base.num_beams, low=1, high=MAX_BEAMS, param="num_beams"),
            top_k=_bounded(top_k, base.top_k, low=1, high=MAX_TOP_K, param="top_k"),
        )

    def _clean(self, text: str | None) -> str | None:
        if text is not None and not isinstance(text, str):
            raise InvalidInput(f"'{self.text_param}' must be a string", param=self.text_param)
        text = (text or "").strip() or None
        if text is None and self.task == "vqa":
            raise InvalidInput(
                f"model '{self.model_id}' answers questions: 'question' is required", param="question"
            )
        return text

    def _text_ids(self, text: str | None) -> tuple[int, ...]:
        if text is None:
            return ()
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInput(
                f"'{self.text_param}' is {len(text)} characters; the limit is {MAX_TEXT_CHARS}",
                param=self.text_param,
            )
        ids = self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
        if len(ids) > self.max_text_tokens:
            raise InvalidInput(
                f"'{self.text_param}' is {len(ids)} tokens; model '{self.model_id}' takes at most "
                f"{self.max_text_tokens}",
                param=self.text_param,
            )
        return tuple(ids)

    def check_text(self, text: str | None) -> int:
        """Tokens of the prompt or question (special tokens included); ``InvalidInput`` if unusable."""
        return len(self._text_ids(self._clean(text)))

    def preprocess(self, image: np.ndarray, text: str | None) -> VLInput:
        check_image(image)
        text = self._clean(text)
        return VLInput(pixels=self._pixels(image), text=text, text_ids=self._text_ids(text))

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    # ------------------------------------------------------------------------------------ core
    def generate(self, inputs: Sequence[VLInput], settings: GenerationSettings) -> list[VLOutput]:
        if not inputs:
            return []
        with torch.inference_mode(), autocast(self.precision, self.device):
            return self._generate(list(inputs), settings)

    def _generate(self, inputs: list[VLInput], settings: GenerationSettings) -> list[VLOutput]:
        raise NotImplementedError

    def _stack_pixels(self, inputs: Sequence[VLInput]) -> torch.Tensor:
        return torch.stack([i.pixels for i in inputs]).to(self.device)

    def _decode_kwargs(self, settings: GenerationSettings) -> dict:
        return dict(max_new_tokens=settings.max_tokens, num_beams=settings.num_beams, do_sample=False)

    # ------------------------------------------------------------------------------------ post
    def _new_tokens(self, row: torch.Tensor) -> list[int]:
        """Generated ids up to the end-of-sequence token, padding dropped."""
        ids = []
        for token in row.tolist():
            if token == self._eos_id:
                break
            if token != self.tokenizer.pad_token_id:
                ids.append(token)
        return ids

    def _caption(self, item: VLInput, new_ids: list[int]) -> VLOutput:
        """The caller's prompt verbatim, then the decoded continuation (with the prompt's tokens, so
        a continuation that extends the prompt's last word joins it)."""
        tokens = [t for t in new_ids if t not in self.tokenizer.all_special_ids]
        if item.text is None:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        else:
            prompt_ids = [t for t in item.text_ids if t not in self.tokenizer.all_special_ids]
            prompt = self.tokenizer.decode(prompt_ids, skip_special_tokens=True)
            full = self.tokenizer.decode(prompt_ids + tokens, skip_special_tokens=True)
            tail = full[len(prompt) :] if full.startswith(prompt) else " " + self.tokenizer.decode(tokens)
            text = (item.text + tail).strip()
        return VLOutput(text=text, tokens=len(tokens), prompt_tokens=len(item.text_ids))

    def warmup(self) -> None:
        image = np.full((64, 64, 3), 127, dtype=np.uint8)
        text = None if self.task == "caption" else "what is this?"
        run_batch(self, [(image, text)], self.settings(max_tokens=2, num_beams=1, top_k=1))


class _Captioner(_HFVisionLanguage):
    """Decoder-only captioning over the image (BLIP, GIT): one generate call per prompt length."""

    task: Task = "caption"

    def _generate(self, inputs: list[VLInput], settings: GenerationSettings) -> list[VLOutput]:
        out: list[VLOutput | None] = [None] * len(inputs)
        for indices in _by_prompt_length(inputs).values():
            group = [inputs[i] for i in indices]
            prefix = torch.tensor([self._prefix(i) for i in group], dtype=torch.long, device=self.device)
            self.stats.record(len(group))
            ids = self._call_generate(self._stack_pixels(group), prefix, settings)
            for i, item, row in zip(indices, group, ids):
                out[i] = self._caption(item, self._new_tokens(row[self._prefix_length(prefix) :]))
        return out  # type: ignore[return-value]

    def _prefix(self, item: VLInput) -> list[int]:
        raise NotImplementedError

    def _prefix_length(self, prefix: torch.Tensor) -> int:
        return prefix.shape[1]

    def _call_generate(self, pixels: torch.Tensor, prefix: torch.Tensor, settings: GenerationSettings):
        raise NotImplementedError


def _by_prompt_length(inputs: Sequence[VLInput]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, item in enumerate(inputs):
        groups.setdefault(len(item.text_ids), []).append(i)
    return groups


class BlipCaptioner(_Captioner):
    """``BlipForConditionalGeneration``: unconditional captions, or conditional ones that continue a prompt."""

    engine: Engine = "blip"

    model_class, model_type = "BlipForConditionalGeneration", "blip"

    @property
    def _eos_id(self) -> int:
        return self.model.config.text_config.sep_token_id

    def _prefix(self, item: VLInput) -> list[int]:
        """``[CLS] prompt [SEP]`` as BLIP's processor writes it; ``generate`` swaps [CLS] for the
        decoder's BOS and drops the [SEP]. No prompt: ``[CLS] [SEP]``, i.e. BOS alone."""
        return list(item.text_ids) or [self.tokenizer.cls_token_id, self.tokenizer.sep_token_id]

    def _prefix_length(self, prefix: torch.Tensor) -> int:
        return prefix.shape[1] - 1

    def _call_generate(self, pixels: torch.Tensor, prefix: torch.Tensor, settings: GenerationSettings):
        return self.model.generate(pixel_values=pixels, input_ids=prefix, **self._decode_kwargs(settings))


class GitCaptioner(_Captioner):
    """``GitForCausalLM`` (microsoft/git-*): the caption continues ``[CLS] prompt`` after the image tokens."""

    engine: Engine = "git"

    model_class, model_type = "GitForCausalLM", "git"

    @property
    def _eos_id(self) -> int:
        return self.tokenizer.sep_token_id

    def _prefix(self, item: VLInput) -> list[int]:
        """``[CLS] prompt`` (no [SEP]: the caption goes on from the prompt)."""
        return [self.tokenizer.cls_token_id] + [
            t for t in item.text_ids if t not in self.tokenizer.all_special_ids
        ]

    def _call_generate(self, pixels: torch.Tensor, prefix: torch.Tensor, settings: GenerationSettings):
        return self.model.generate(
            pixel_values=pixels,
            input_ids=prefix,
            eos_token_id=self._eos_id,
            pad_token_id=self.tokenizer.pad_token_id,
            **self._decode_kwargs(settings),
        )


class BlipQuestionAnswerer(_HFVisionLanguage):
    """``BlipForQuestionAnswering``: the question is encoded with the image, the answer decoded from it.

    Runs BLIP's own three steps (vision encoder, question encoder, answer decoder) rather than
    ``BlipForQuestionAnswering.generate``, which lets the decoder attend to the question's padding:
    here a question's answer does not depend on the longest question in its batch.
    """

    task: Task = "vqa"
    engine: Engine = "blip"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        _mask_cross_attention(self.model.text_decoder)

    model_class, model_type = "BlipForQuestionAnswering", "blip"

    @property
    def _eos_id(self) -> int:
        return self.model.config.text_config.sep_token_id

    def _generate(self, inputs: list[VLInput], settings: GenerationSettings) -> list[VLOutput]:
        questions = self.tokenizer.pad(
            {"input_ids": [list(i.text_ids) for i in inputs]}, padding="longest", return_tensors="pt"
        ).to(self.device)
        image = self.model.vision_model(pixel_values=self._stack_pixels(inputs))[0]
        image_mask = torch.ones(image.shape[:-1], dtype=torch.long, device=self.device)
        encoded = self.model.text_encoder(
            input_ids=questions["input_ids"],
            attention_mask=questions["attention_mask"],
            encoder_hidden_states=image,
            encoder_attention_mask=image_mask,
            return_dict=False,
        )[0]
        bos = torch.full(
            (len(inputs), 1), self.model.decoder_start_token_id, dtype=torch.long, device=self.device
        )
        self.stats.record(len(inputs))
        ids = self.model.text_decoder.generate(
            input_ids=bos,
            eos_token_id=self._eos_id,
            pad_token_id=self.tokenizer.pad_token_id,
            encoder_hidden_states=encoded,
            encoder_attention_mask=questions["attention_mask"],
            **self._decode_kwargs(settings),
        )
        return [self._answer(item, self._new_tokens(row[1:])) for item, row in zip(inputs, ids)]

    def _answer(self, item: VLInput, new_ids: list[int]) -> VLOutput:
        tokens = [t for t in new_ids if t not in self.tokenizer.all_special_ids]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return VLOutput(text=text, tokens=len(tokens), prompt_tokens=len(item.text_ids))


class ViltQuestionAnswerer(_HFVisionLanguage):
    """``ViltForQuestionAnswering``: VQA as classification over the answers in ``config.id2label``."""

    task: Task = "vqa"
    engine: Engine = "vilt"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self._label_tokens = torch.tensor(
            [len(self.tokenizer(label, add_special_tokens=False)["input_ids"]) for label in self.labels]
        )

    model_class, model_type = "ViltForQuestionAnswering", "vilt"

    def _limits(self, text_positions: int) -> tuple[int, int]:
        """Answers are labels, not decoded: ``max_tokens`` only filters them."""
        return MAX_NEW_TOKENS, min(int(self.tokenizer.model_max_length), text_positions)

    def settings(
        self, *, max_tokens: int | None = None, num_beams: int | None = None, top_k: int | None = None
    ) -> GenerationSettings:
        """ViLT classifies, so beam search means nothing to it: ``num_beams`` above 1 is refused;
        ``max_tokens`` keeps only answers that fit in that many tokens."""
        if num_beams not in (None, 1):
            raise InvalidInput(
                f"model '{self.model_id}' (ViLT) picks answers from a fixed list and does not "
                "decode: 'num_beams' must be 1",
                param="num_beams",
            )
        return super().settings(max_tokens=max_tokens, num_beams=1, top_k=top_k)

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        return self.processor.image_processor(images=image, do_pad=False, return_tensors="pt")[
            "pixel_values"
        ][0]

    def _generate(self, inputs: list[VLInput], settings: GenerationSettings) -> list[VLOutput]:
        text = self.tokenizer.pad(
            {"input_ids": [list(i.text_ids) for i in inputs]}, padding="longest", return_tensors="pt"
        ).to(self.device)
        pixels, pixel_mask = _pad_images([i.pixels for i in inputs])
        self.stats.record(len(inputs))
        logits = self.model(
            input_ids=text["input_ids"],
            attention_mask=text["attention_mask"],
            token_type_ids=torch.zeros_like(text["input_ids"]),
            pixel_values=pixels.to(self.device),
            pixel_mask=pixel_mask.to(self.device),
        ).logits
        probs = logits.float().softmax(-1).cpu()
        probs[:, self._label_tokens > settings.max_tokens] = -1.0  # answers longer than max_tokens never win
        return [self._answers(item, row, settings) for item, row in zip(inputs, probs)]

    def _answers(self, item: VLInput, probs: torch.Tensor, settings: GenerationSettings) -> VLOutput:
        k = min(settings.top_k, int((probs >= 0).sum()))
        values, idx = probs.topk(k)
        answers = tuple(
            ScoredAnswer(answer=self.labels[i], probability=round(float(p), 6))
            for p, i in zip(values.tolist(), idx.tolist())
        )
        best = answers[0] if answers else ScoredAnswer(answer="", probability=0.0)
        return VLOutput(
            text=best.answer,
            tokens=int(self._label_tokens[idx[0]]) if answers else 0,
            prompt_tokens=len(item.text_ids),
            answers=answers,
        )


def _mask_cross_attention(decoder: torch.nn.Module) -> None:
    """Make BLIP's text decoder honour ``encoder_attention_mask`` in cross-attention.

    In transformers 5.x ``BlipTextLayer`` hands the encoder mask to its cross-attention as
    ``attention_mask``, and ``BlipTextSelfAttention`` then replaces it with its (unset)
    ``encoder_attention_mask``: the answer decoder attends to the padding of shorter questions, so an
    answer would depend on the other questions in its batch. The hook passes the mask under the name
    the attention reads; where transformers passes it right, it changes nothing.
    """
    from transformers.models.blip.modeling_blip_text import BlipTextSelfAttention

    def hook(module, args, kwargs):
        if kwargs.get("encoder_hidden_states") is not None and kwargs.get("encoder_attention_mask") is None:
            kwargs["encoder_attention_mask"] = kwargs.get("attention_mask")
        return args, kwargs

    for name, module in decoder.named_modules():
        if isinstance(module, BlipTextSelfAttention) and name.endswith("crossattention.self"):
            module.register_forward_pre_hook(hook, with_kwargs=True)


def _pad_images(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad ``[3, H, W]`` images to the batch's largest height and width (bottom and right), with
    the ``pixel_mask`` ViLT takes (1 on real pixels), as ``ViltImageProcessor`` pads a batch."""
    height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    pixels = torch.zeros(len(images), images[0].shape[0], height, width, dtype=images[0].dtype)
    mask = torch.zeros(len(images), height, width, dtype=torch.long)
    for n, image in enumerate(images):
        pixels[n, :, : image.shape[1], : image.shape[2]] = image
        mask[n, : image.shape[1], : image.shape[2]] = 1
    return pixels, mask


def _expect_model_type(path, model_type: str, model_id: str) -> None:
    """Refuse a checkpoint of another architecture at load time, with the model id in the message."""
    from transformers import AutoConfig

    found = AutoConfig.from_pretrained(str(path)).model_type
    if found != model_type:
        raise ValueError(
            f"vision-language model '{model_id}': '{path}' holds a '{found}' checkpoint; "
            f"engine {model_type} needs a '{model_type}' one"
        )


BACKENDS: dict[tuple[Task, Engine], type[_HFVisionLanguage]] = {
    ("caption", "blip"): BlipCaptioner,
    ("caption", "git"): GitCaptioner,
    ("vqa", "blip"): BlipQuestionAnswerer,
    ("vqa", "vilt"): ViltQuestionAnswerer,
}
