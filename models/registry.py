"""Typed model specs and the factories that turn them into loaded backends.

A spec names either a packaged offline model (the default) or any transformers hub id / local
directory. Specs are plain pydantic models so the app builder, the CLI and tests share them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models import packaged
from models.accel import Runtime
from models.adapter import (
    AdapterImageEmbedder,
    AdapterTextEncoder,
    FrozenEncoders,
    adapter_space,
    check_promotion,
    load_heads,
)
from models.runtime import Precision
from models.speech import FasterWhisperEngine, SpeechEngine, TransformersWhisperEngine
from models.text import CLIPTextEncoder, ConSEQueryEncoder, MiniLMEncoder, TextEmbedder, clip_space
from models.vision import (
    CLASS_PROMPT,
    ENSEMBLE_PROMPTS,
    CLIPImageEmbedder,
    ConSEEmbedder,
    EfficientNetLiteClassifier,
    ImageClassifier,
    ImageEmbedder,
    ViTClassifier,
    class_name_embeddings,
)
from models.vision_language import (
    BACKENDS as VL_BACKENDS,
)
from models.vision_language import (
    MAX_BEAMS,
    MAX_NEW_TOKENS,
    MAX_TOP_K,
    GenerationSettings,
    VisionLanguageModel,
)
from models.vision_language import (
    Engine as VLEngine,
)
from models.vision_language import (
    Task as VLTask,
)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EncoderPrecision = Literal["fp32", "bf16", "fp16", "auto", "int8"]
RUNTIME_HELP = (
    "torch, or a compiled CPU runtime (onnxruntime: fp32, int8; openvino: fp32, bf16, int8) exported "
    "from the torch weights at load time and cached under ~/.cache/mmserve/compiled"
)


def _check_runtime(spec, model_name: str, compiled_ok: bool) -> None:
    """int8 only on a compiled runtime, and a compiled runtime only for the models it can export."""
    if spec.runtime == "torch" and spec.precision == "int8":
        raise ValueError(f"{model_name}: precision int8 needs runtime onnxruntime or openvino")
    if spec.runtime != "torch" and not compiled_ok:
        raise ValueError(
            f"{model_name}: runtime {spec.runtime} is offered for the packaged EfficientNet-Lite "
            "and MiniLM encoders; use runtime torch for this model"
        )


ClassPrompts = Literal["single", "ensemble"]


class QueryConSESpec(_Spec):
    """Query-side ConSE (``models.text.ConSEQueryEncoder``): texts projected onto the ImageNet
    class-prompt span that ConSE places images in. Measured by ``benchmarks/conse_query.py`` on the
    demo caption set (defaults = its best setting on val): zero-shot top-1 over 18 photos 0.44 ->
    0.61, but text-to-image R@1 on val 0.54 -> 0.38 (test 0.76 -> 0.80), so it is off by default."""

    top_t: int = Field(5, ge=1, le=1000)
    temperature: float = Field(0.1, gt=0, description="softmax temperature over the class-prompt cosines")
    mix: float = Field(0.5, ge=0, le=1, description="weight of the raw sentence vector (0 = projection only)")
    prompts: ClassPrompts = Field("single", description="class prompts; match vision.conse_prompts")


class TextModelSpec(_Spec):
    kind: Literal["minilm", "clip", "adapter"] = "minilm"
    path: str | None = Field(
        None,
        description="hub id or local directory; empty = packaged all-MiniLM-L6-v2; "
        "kind=adapter: the adapter checkpoint directory",
    )
    precision: EncoderPrecision = "fp32"
    runtime: Runtime = Field("torch", description=RUNTIME_HELP)
    query_conse: QueryConSESpec | None = Field(
        None, description="project texts onto ConSE's class-prompt span"
    )
    allow_worse_than_base: bool = Field(
        False,
        description="kind=adapter: serve a checkpoint that did not beat its base space on photo-held-out "
        "validation (its metadata says so); refused otherwise",
    )

    @model_validator(mode="after")
    def _clip_needs_path(self):
        if self.kind == "clip" and not self.path:
            raise ValueError(
                "text.kind=clip needs a path (hub id or directory); no CLIP weights are packaged"
            )
        if self.kind == "adapter" and not self.path:
            raise ValueError(
                "text.kind=adapter needs path: the adapter checkpoint directory (mmserve finetune --out)"
            )
        if self.kind == "adapter" and self.query_conse is not None:
            raise ValueError("text.query_conse applies to ConSE spaces, not to kind=adapter")
        _check_runtime(self, "text", compiled_ok=self.kind != "clip")
        return self

    @property
    def model_id(self) -> str:
        return self.path or packaged.MINILM

    @property
    def space(self) -> str:
        """The embedding space; an adapter's is named by its checkpoint (read from its metadata)."""
        if self.kind == "adapter":
            return adapter_space(self.path)
        return clip_space(self.model_id) if self.kind == "clip" else f"text:{self.model_id}"


# The packaged backbones (``models.packaged.EFFICIENTNET_LITE``). Lite0 is the default: on the demo
# photos Lite1 and Lite2 gain nothing beyond noise and take 1.25-1.8x and 1.6-2.5x its time per image
# (``python -m benchmarks.quality --backbones``; docs/performance.md, "Vision backbone").
LiteBackbone = Literal["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
LITE_BACKBONES: tuple[str, ...] = get_args(LiteBackbone)


class VisionModelSpec(_Spec):
    classifier: LiteBackbone | Literal["vit"] = Field(
        "efficientnet-lite0",
        description="a packaged EfficientNet-Lite (0: 224 px, 1: 240 px, 2: 260 px), or vit (classifier_path)",
    )
    classifier_path: str | None = Field(None, description="hub id or directory for classifier=vit")
    embedder: Literal["conse", "clip", "adapter"] = "conse"
    embedder_path: str | None = Field(
        None,
        description="hub id or directory for embedder=clip; the adapter "
        "checkpoint directory for embedder=adapter",
    )
    conse_top_t: int = Field(10, ge=1, le=1000)
    conse_prompts: ClassPrompts = Field(
        "single", description="class-name prompt, or a prompt ensemble (averaged)"
    )
    precision: EncoderPrecision = "fp32"
    runtime: Runtime = Field("torch", description=RUNTIME_HELP)
    torchscript: bool = Field(
        True, description="trace and freeze EfficientNet-Lite (fp32) for a GIL-free forward"
    )
    allow_worse_than_base: bool = Field(
        False,
        description="embedder=adapter: serve a checkpoint that did not beat its base space on photo-held-out "
        "validation (its metadata says so); refused otherwise",
    )

    @model_validator(mode="after")
    def _paths(self):
        if self.classifier == "vit" and not self.classifier_path:
            raise ValueError("vision.classifier=vit needs classifier_path (hub id or directory)")
        if self.embedder == "clip" and not self.embedder_path:
            raise ValueError("vision.embedder=clip needs embedder_path (hub id or directory)")
        if self.embedder == "adapter" and not self.embedder_path:
            raise ValueError("vision.embedder=adapter needs embedder_path: the adapter checkpoint directory")
        if self.embedder == "adapter" and self.classifier != "efficientnet-lite0":
            raise ValueError(
                "vision.embedder=adapter runs over EfficientNet-Lite0 features: keep classifier "
                "efficientnet-lite0"
            )
        _check_runtime(self, "vision", compiled_ok=self.classifier in LITE_BACKBONES)
        if self.runtime != "torch" and self.embedder == "clip":
            raise ValueError(
                "vision: runtime applies to EfficientNet-Lite (conse, adapter); CLIP runs on torch"
            )
        return self

    def space(self, text: TextModelSpec) -> str:
        """ConSE lives in the text encoder's space; CLIP and adapters in their own checkpoint's space."""
        if self.embedder == "adapter":
            return adapter_space(self.embedder_path)
        return clip_space(self.embedder_path) if self.embedder == "clip" else text.space


class SpeechModelSpec(_Spec):
    engine: Literal["faster-whisper", "transformers"] = "faster-whisper"
    model: str = Field(packaged.WHISPER_BASE, description="packaged name, hub id or local directory")
    compute_type: str = Field("int8", description="CTranslate2 compute type for faster-whisper")
    cpu_threads: int = Field(0, ge=0, description="0 = CTranslate2's default")
    long_audio_batch_size: int = Field(
        8,
        ge=0,
        le=64,
        description="faster-whisper: audio over 30 s, greedy and unprompted, is cut at pauses "
        "(Silero VAD) into <= 25 s spans decoded this many at a time (python -m benchmarks.whisper_speed "
        "--parts long: speed and WER against the sequential path); 0 = faster-whisper's sequential window",
    )
    cache_dir: str = Field("~/.cache/mmserve", description="where split packaged weights are assembled")

    @property
    def model_id(self) -> str:
        return self.model


class VisionLanguageModelSpec(_Spec):
    """One captioning or VQA model of the VisionLanguage deployment, served by ``id``."""

    id: str = Field(
        ...,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        description="the name requests use in 'model'",
    )
    task: VLTask
    engine: VLEngine = Field(
        ..., description="blip (caption, vqa), vilt (vqa by classification), git (caption)"
    )
    path: str = Field(..., min_length=1, description="hub id or local directory")
    precision: Precision = "fp32"
    max_tokens: int = Field(30, ge=1, le=MAX_NEW_TOKENS, description="default for requests that give none")
    num_beams: int = Field(1, ge=1, le=MAX_BEAMS, description="default for requests that give none")
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="answers returned by vilt")

    @model_validator(mode="after")
    def _engine_does_task(self):
        if (self.task, self.engine) not in VL_BACKENDS:
            able = sorted(t for t, e in VL_BACKENDS if e == self.engine)
            raise ValueError(
                f"vision-language model '{self.id}': engine {self.engine} does {', '.join(able)}, "
                f"not {self.task}"
            )
        if self.engine == "vilt" and self.num_beams != 1:
            raise ValueError(f"vision-language model '{self.id}': vilt classifies; num_beams must be 1")
        return self

    @property
    def defaults(self) -> GenerationSettings:
        return GenerationSettings(max_tokens=self.max_tokens, num_beams=self.num_beams, top_k=self.top_k)


def load_text(spec: TextModelSpec, *, device: str = "cpu") -> TextEmbedder:
    if spec.kind == "clip":
        encoder = CLIPTextEncoder.load(
            spec.path, model_id=spec.model_id, device=device, precision=spec.precision
        )
    elif spec.kind == "adapter":
        heads, meta = load_heads(spec.path)
        check_promotion(meta, allow_worse_than_base=spec.allow_worse_than_base, field="text.model.path")
        base = MiniLMEncoder.load(
            packaged.minilm_dir(),
            model_id=packaged.MINILM,
            device=device,
            precision=spec.precision,
            runtime=spec.runtime,
        )
        return AdapterTextEncoder(base=base, heads=heads.to(device), meta=meta)
    else:
        path = spec.path or packaged.minilm_dir()
        encoder = MiniLMEncoder.load(
            path, model_id=spec.model_id, device=device, precision=spec.precision, runtime=spec.runtime
        )
    if spec.query_conse is None:
        return encoder
    q = spec.query_conse
    classes = class_name_embeddings(encoder, packaged.imagenet_labels(), templates=class_templates(q.prompts))
    return ConSEQueryEncoder(
        base=encoder, class_embeddings=classes, top_t=q.top_t, temperature=q.temperature, mix=q.mix
    )


def class_templates(prompts: ClassPrompts) -> tuple[str, ...]:
    return ENSEMBLE_PROMPTS if prompts == "ensemble" else (CLASS_PROMPT,)


def load_classifier(spec: VisionModelSpec, *, device: str = "cpu") -> ImageClassifier:
    if spec.classifier == "vit":
        return ViTClassifier.load(
            spec.classifier_path, model_id=spec.classifier_path, device=device, precision=spec.precision
        )
    return EfficientNetLiteClassifier.load(
        packaged.efficientnet_lite_weights(spec.classifier),
        labels=packaged.imagenet_labels(),
        name=spec.classifier,
        device=device,
        precision=spec.precision,
        torchscript=spec.torchscript,
        runtime=spec.runtime,
    )


def load_embedder(
    spec: VisionModelSpec, text: TextModelSpec, *, classifier: ImageClassifier, device: str = "cpu"
) -> ImageEmbedder:
    """CLIP's image tower, an adapter checkpoint over ``classifier``'s features, or ConSE over
    ``classifier`` in the space of the ``text`` encoder."""
    if spec.embedder == "clip":
        return CLIPImageEmbedder.load(
            spec.embedder_path, model_id=spec.embedder_path, device=device, precision=spec.precision
        )
    if spec.embedder == "adapter":
        heads, meta = load_heads(spec.embedder_path)
        check_promotion(
            meta, allow_worse_than_base=spec.allow_worse_than_base, field="vision.model.embedder_path"
        )
        # the base space the residual head was trained over: ConSE with its recorded settings
        top_t = (meta["base"].get("before") or {}).get("top_t", spec.conse_top_t)
        base_text = TextModelSpec(precision=text.precision, runtime=text.runtime)
        conse = load_embedder(
            spec.model_copy(update={"embedder": "conse", "embedder_path": None, "conse_top_t": top_t}),
            base_text,
            classifier=classifier,
            device=device,
        )
        return AdapterImageEmbedder(classifier=classifier, conse=conse, heads=heads.to(device), meta=meta)
    encoder = load_text(text.model_copy(update={"query_conse": None}), device=device)
    classes = class_name_embeddings(encoder, classifier.labels, templates=class_templates(spec.conse_prompts))
    return ConSEEmbedder(
        classifier=classifier, class_embeddings=classes, space=encoder.space, top_t=spec.conse_top_t
    )


def load_frozen_encoders() -> FrozenEncoders:
    """The packaged base encoders an adapter is trained over (``models.adapter``), loaded once."""
    classifier = load_classifier(VisionModelSpec())
    conse = load_embedder(VisionModelSpec(), TextModelSpec(), classifier=classifier)
    return FrozenEncoders(classifier=classifier, text=load_text(TextModelSpec()), conse=conse)


def load_speech(spec: SpeechModelSpec, *, device: str = "cpu") -> SpeechEngine:
    path = _speech_path(spec)
    if spec.engine == "transformers":
        return TransformersWhisperEngine.load(path, model_id=spec.model_id, device=device)
    compute_type = spec.compute_type if device == "cpu" or spec.compute_type != "int8" else "int8_float16"
    return FasterWhisperEngine.load(
        path,
        model_id=spec.model_id,
        device=device,
        compute_type=compute_type,
        cpu_threads=spec.cpu_threads,
        long_audio_batch_size=spec.long_audio_batch_size,
    )


def _speech_path(spec: SpeechModelSpec) -> str:
    if spec.model in packaged.PACKAGED_WHISPER:
        if spec.engine != "faster-whisper":
            raise ValueError(f"packaged '{spec.model}' is CTranslate2: use engine=faster-whisper")
        return str(packaged.whisper_dir(spec.model, Path(spec.cache_dir)))
    return spec.model


def load_vision_language(spec: VisionLanguageModelSpec, *, device: str = "cpu") -> VisionLanguageModel:
    backend = VL_BACKENDS[(spec.task, spec.engine)]
    return backend.load(
        spec.path, model_id=spec.id, device=device, precision=spec.precision, defaults=spec.defaults
    )
