"""The wire schemas: one module, shared by the gateway (validation, OpenAPI) and the client.

Media fields accept base64 or a ``data:<mime>;base64,`` URL in JSON bodies, and raw file parts in
multipart bodies; either way the validated value is ``bytes``.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
MAX_ITEMS = 64


def media_bytes(value: object) -> bytes:
    """Bytes of a media value: raw bytes, base64 or a data URL (raises ValueError)."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        try:
            raw = base64.b64decode(_DATA_URL.sub("", value.strip(), count=1), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"not valid base64: {exc}") from exc
    else:
        raise ValueError("expected a base64 string, a data URL or an uploaded file")
    if not raw:
        raise ValueError("empty media")
    return raw


Media = Annotated[
    bytes,
    BeforeValidator(media_bytes),
    WithJsonSchema({"type": "string", "contentEncoding": "base64",
                    "description": "base64 or data URL (JSON), or a file part (multipart)"}),
]
NonEmptyText = Annotated[str, Field(min_length=1, max_length=10_000)]
EmbeddingInput = Annotated[str, Field(min_length=1, max_length=70_000_000)]  # base64 of a 50 MiB upload fits


def encode_media(raw: bytes) -> str:
    """What a client puts into a JSON media field."""
    return base64.b64encode(raw).decode("ascii")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---- errors -------------------------------------------------------------------------------
class ErrorDetail(_Response):
    type: str
    message: str
    param: str | None = None


class ErrorResponse(_Response):
    error: ErrorDetail


# ---- embeddings ---------------------------------------------------------------------------
class TextEmbedRequest(_Request):
    texts: list[NonEmptyText] = Field(min_length=1, max_length=MAX_ITEMS * 4)


class ImageEmbedRequest(_Request):
    images: list[Media] = Field(min_length=1, max_length=MAX_ITEMS)


class AudioEmbedRequest(_Request):
    audio: list[Media] = Field(min_length=1, max_length=MAX_ITEMS)


class Embedding(_Response):
    index: int
    embedding: list[float]


class EmbeddingResponse(_Response):
    model: str
    space: str
    dim: int
    data: list[Embedding]


# ---- OpenAI-compatible embeddings ------------------------------------------------------------
class OpenAIEmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: OpenAI's shape; ``model`` picks the modality (text, image or audio
    embedder id from ``/v1/models``), or ``modality`` says it. Image and audio inputs are base64
    or data URLs."""

    model_config = ConfigDict(extra="ignore")  # OpenAI clients may send fields we do not use (user, ...)
    input: EmbeddingInput | Annotated[list[EmbeddingInput], Field(min_length=1, max_length=MAX_ITEMS * 4)] = Field(
        description="one input or a list (at most 256): texts, or base64 / data URLs of images or audio")
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    modality: Literal["text", "image", "audio"] | None = None
    dimensions: int | None = Field(None, description="must equal the model's dimension when given")

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class OpenAIEmbedding(_Response):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class Usage(_Response):
    """Present for OpenAI clients; mmserve does not count tokens, so both stay 0."""

    prompt_tokens: int = 0
    total_tokens: int = 0


class OpenAIEmbeddingResponse(_Response):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: Usage = Usage()


# ---- vision -------------------------------------------------------------------------------
class ZeroShotRequest(_Request):
    image: Media
    labels: list[NonEmptyText] = Field(min_length=1, max_length=1000)
    template: str = Field("a photo of a {}", description="prompt template; '{}' is replaced by each label")


class LabelScore(_Response):
    label: str
    score: float


class ZeroShotResponse(_Response):
    model: str
    labels: list[LabelScore] = Field(description="all candidates, most probable first")


class ClassifyRequest(_Request):
    image: Media
    top_k: int = Field(5, ge=1, le=100)


class Prediction(_Response):
    index: int
    label: str
    score: float


class ClassifyResponse(_Response):
    model: str
    predictions: list[Prediction]


class RetrievalRequest(_Request):
    images: list[Media] = Field(min_length=1, max_length=MAX_ITEMS)
    texts: list[NonEmptyText] = Field(min_length=1, max_length=MAX_ITEMS * 4)
    top_k: int = Field(5, ge=1, le=MAX_ITEMS * 4)


class Match(_Response):
    index: int
    score: float


class RetrievalResponse(_Response):
    model: str
    similarity: list[list[float]] = Field(description="cosine similarity, one row per image, one column per text")
    image_to_text: list[list[Match]]
    text_to_image: list[list[Match]]


# ---- audio --------------------------------------------------------------------------------
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]


class TranscriptionRequest(_Request):
    file: Media
    model: str | None = Field(None, description="ignored beyond validation: the deployment serves one model")
    language: str | None = Field(None, description="ISO-639-1 code; detected when absent")
    prompt: str | None = Field(None, max_length=2000)
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)


class TranslationRequest(_Request):
    file: Media
    model: str | None = None
    prompt: str | None = Field(None, max_length=2000)
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)


class TranscriptSegment(_Response):
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


class TranscriptionResponse(_Response):
    text: str


class VerboseTranscriptionResponse(_Response):
    task: str
    language: str
    language_probability: float
    duration: float
    text: str
    segments: list[TranscriptSegment]


FeatureName = Literal["mel", "mfcc", "chroma"]


class FeaturesRequest(_Request):
    audio: Media
    features: list[FeatureName] = Field(default_factory=lambda: ["mel", "mfcc", "chroma"], min_length=1)


class FeatureMatrix(_Response):
    shape: list[int]
    data: list[list[float]]


class FeaturesResponse(_Response):
    sample_rate: int
    frame_rate: float
    duration: float
    features: dict[str, FeatureMatrix]


# ---- service ------------------------------------------------------------------------------
class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "mmserve"
    modality: str
    task: str
    space: str | None = None
    dim: int | None = None
    device: str | None = None


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(_Response):
    status: str
    deployments: dict[str, str] = Field(default_factory=dict)
