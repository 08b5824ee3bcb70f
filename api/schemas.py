"""The wire schemas: one module, shared by the gateway (validation, OpenAPI) and the client.

Media fields accept base64 or a ``data:<mime>;base64,`` URL in JSON bodies, and raw file parts in
multipart bodies; either way the validated value is ``bytes``. Media that is none of these raises
``MediaError``, which the gateway answers with 400 on every route.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import string
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
MAX_ITEMS = 64


class MediaError(ValueError):
    """A media value that is not base64, a data URL or a file part, or is empty."""


def media_bytes(value: object) -> bytes:
    """Bytes of a media value: raw bytes, base64 (also MIME-wrapped) or a data URL (raises MediaError)."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        try:
            raw = base64.b64decode(_unwrapped(_DATA_URL.sub("", value.strip(), count=1)), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"not valid base64 or a data URL ({exc})") from None
    else:
        raise MediaError("expected a base64 string, a data URL or an uploaded file")
    if not raw:
        raise MediaError("empty media")
    return raw


def _unwrapped(text: str) -> str:
    r"""Base64 without the line breaks of MIME-style wrapping (``base64`` prints 76 columns, PEM and
    ``openssl`` 64): ``\n`` or ``\r\n`` after every line of one width, the last line no longer. Any other
    whitespace, or breaks at uneven places, stays for the strict decoder to refuse or is refused here.
    Unwrapped input (what clients send) costs one scan for a line feed; wrapped input is checked with
    strided slices and unwrapped with one replace, no per-line Python objects."""
    first = text.find("\n")
    if first < 0:
        return text
    brk = "\r\n" if text[first - 1 : first] == "\r" else "\n"
    width = first + 1 - len(brk)
    stride, count = width + len(brk), text.count("\n")
    last = len(text) - count * stride
    if (
        width <= 0
        or not 0 < last <= width
        or any(text[width + i :: stride] != ch * count for i, ch in enumerate(brk))
    ):
        raise ValueError("line breaks in base64 must wrap it at a fixed width, as MIME does")
    return text.replace(brk, "")


Media = Annotated[
    bytes,
    BeforeValidator(media_bytes),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "description": "base64 or data URL (JSON), or a file part (multipart)",
        }
    ),
]
MAX_TEXT_CHARS = 10_000  # one text input, on every route that takes text
NonEmptyText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
EmbeddingInput = Annotated[str, Field(min_length=1, max_length=70_000_000)]  # base64 of a 50 MiB upload fits


def _not_a_bool(value: object) -> object:
    """Numbers are numbers: pydantic's lax mode would take ``true`` for 1 (``top_k: true`` answered
    200). Strings still convert, as multipart form fields need ("5")."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


NO_BOOL = BeforeValidator(_not_a_bool)
Int = Annotated[int, NO_BOOL]  # constraints go on the field (Field(ge=...)) or before NO_BOOL, not around Int
Float = Annotated[float, NO_BOOL]


class TemplateError(ValueError):
    """A zero-shot prompt template that is not text with exactly one ``{}`` (answered 400, like media)."""


MAX_TEMPLATE_CHARS = 256
MAX_LABEL_CHARS = MAX_TEXT_CHARS - MAX_TEMPLATE_CHARS  # so template.format(label) is one text within the cap


def check_template(template: str) -> str:
    """Exactly one ``{}`` and no other format field: a template is formatted once per label in the
    gateway, and a field such as ``{0:.>1000000}`` or ``{0.attr}`` would pad a label to megabytes or
    read attributes (``{{`` and ``}}`` stay literal braces)."""
    try:
        fields = [
            (name, spec, conv)
            for _, name, spec, conv in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:
        raise TemplateError(
            f"not a valid template ({exc}); write '{{{{' or '}}}}' for a literal brace"
        ) from None
    if fields != [("", "", None)]:
        raise TemplateError(
            "a template has exactly one '{}' where the label goes and no other '{...}' field "
            "(write '{{' or '}}' for a literal brace)"
        )
    return template


Template = Annotated[str, Field(min_length=2, max_length=MAX_TEMPLATE_CHARS), AfterValidator(check_template)]
Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
DEFAULT_TEMPLATE = "a photo of a {}"


def content_id(raw: bytes) -> str:
    """An index item's id: the sha256 hex of its bytes, so client and server name content alike."""
    return hashlib.sha256(raw).hexdigest()


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
    request_id: str | None = Field(
        default=None, description="the request's id, as in the answer's X-Request-ID header"
    )


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
    input: EmbeddingInput | Annotated[list[EmbeddingInput], Field(min_length=1, max_length=MAX_ITEMS * 4)] = (
        Field(
            description="one input or a list (at most 256): texts, or base64 / data URLs of images or audio"
        )
    )
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    modality: Literal["text", "image", "audio"] | None = None
    dimensions: Int | None = Field(None, description="must equal the model's dimension when given")

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
    labels: list[Label] = Field(min_length=1, max_length=1000)
    template: Template = Field(
        DEFAULT_TEMPLATE,
        description=(
            "prompt template: exactly one '{}', replaced by each label ('{{' and '}}' are literal braces)"
        ),
    )


class LabelScore(_Response):
    label: str
    score: float


class ZeroShotResponse(_Response):
    model: str
    labels: list[LabelScore] = Field(description="all candidates, most probable first")


class ClassifyRequest(_Request):
    image: Media
    top_k: Int = Field(5, ge=1, le=100)


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
    top_k: Int = Field(5, ge=1, le=MAX_ITEMS * 4)


class Match(_Response):
    index: int
    score: float


class RetrievalResponse(_Response):
    model: str
    similarity: list[list[float]] = Field(
        description="cosine similarity, one row per image, one column per text"
    )
    image_to_text: list[list[Match]]
    text_to_image: list[list[Match]]


# ---- audio --------------------------------------------------------------------------------
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
JSON_RESPONSE_FORMATS = ("json", "verbose_json")  # the others answer plain text


Granularity = Literal["word", "segment"]


class TranscriptionRequest(_Request):
    file: Media
    model: str | None = Field(None, description="ignored beyond validation: the deployment serves one model")
    language: str | None = Field(None, description="ISO-639-1 code; detected when absent")
    prompt: str | None = Field(None, max_length=2000)
    response_format: ResponseFormat = "json"
    temperature: Float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Granularity] = Field(
        default_factory=lambda: list[Granularity](["segment"]),
        max_length=2,
        description=(
            "with 'word', verbose_json carries word timestamps (multipart: 'timestamp_granularities[]')"
        ),
    )
    stream: bool = Field(
        False,
        description=(
            "answer with server-sent events: 'transcript.text.delta' as segments are decoded, then "
            "'transcript.text.done' (response_format json or text only)"
        ),
    )

    def word_timestamps(self) -> bool:
        return "word" in self.timestamp_granularities and self.response_format == "verbose_json"

    def decoding(self) -> dict[str, Any]:
        """The Whisper options this request asks for (online and in a batch)."""
        return {
            "language": self.language,
            "prompt": self.prompt,
            "temperature": self.temperature,
            "word_timestamps": self.word_timestamps(),
        }


class TranslationRequest(_Request):
    file: Media
    model: str | None = None
    prompt: str | None = Field(None, max_length=2000)
    response_format: ResponseFormat = "json"
    temperature: Float = Field(0.0, ge=0.0, le=1.0)
    stream: bool = Field(
        False,
        description=(
            "answer with server-sent events: 'transcript.text.delta' as segments are decoded, then "
            "'transcript.text.done' (response_format json or text only)"
        ),
    )


class TranscriptSegment(_Response):
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


class TranscriptionResponse(_Response):
    text: str


class TranscriptWord(_Response):
    word: str
    start: float
    end: float
    probability: float = 1.0


class VerboseTranscriptionResponse(_Response):
    task: str
    language: str
    language_probability: float
    duration: float
    text: str
    segments: list[TranscriptSegment]
    words: list[TranscriptWord] | None = Field(None, description="when timestamp_granularities has 'word'")

    def json_body(self, response_format: str) -> dict[str, Any]:
        """The JSON answer for ``response_format`` json (``{"text"}``) or verbose_json (all of it,
        ``words`` only when asked for): the online route's and a batch's output line's."""
        if response_format == "verbose_json":
            return self.model_dump(exclude_none=True)
        return TranscriptionResponse(text=self.text).model_dump()


class TranscriptTextDeltaEvent(_Response):
    """A streamed transcription's text as each segment is decoded (OpenAI's event); the deltas
    joined are the done event's text."""

    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class DurationUsage(_Response):
    """What a transcription used: seconds of audio (OpenAI's usage for duration-billed models)."""

    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptTextDoneEvent(_Response):
    """A streamed transcription's last event: the whole text and the usage (OpenAI's event)."""

    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
    usage: DurationUsage


FeatureName = Literal["mel", "mfcc", "chroma"]


class FeaturesRequest(_Request):
    audio: Media
    features: list[FeatureName] = Field(
        default_factory=lambda: list[FeatureName](["mel", "mfcc", "chroma"]), min_length=1
    )


class FeatureMatrix(_Response):
    shape: list[int]
    data: list[list[float]]


class FeaturesResponse(_Response):
    sample_rate: int
    frame_rate: float
    duration: float
    features: dict[str, FeatureMatrix]


# ---- vision-language ------------------------------------------------------------------------
MAX_VL_TEXT = 4096  # characters of a caption prompt or a question (the model also bounds its tokens)
VLText = Annotated[str, Field(min_length=1, max_length=MAX_VL_TEXT)]
MaxTokens = Annotated[
    int, Field(ge=1, le=256, description="most tokens to generate; the model's default when absent"), NO_BOOL
]
NumBeams = Annotated[int, Field(ge=1, le=8, description="beam search width; 1 = greedy"), NO_BOOL]
TopK = Annotated[
    int, Field(ge=1, le=20, description="answers returned by classifying models (ViLT)"), NO_BOOL
]


class TokenUsage(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CaptionRequest(_Request):
    """Give ``image`` or ``images``; every image gets a caption from the same model and settings."""

    image: Media | None = None
    images: list[Media] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    prompt: VLText | None = Field(
        None, description="the text each caption starts with (conditional captioning)"
    )
    max_tokens: MaxTokens | None = None
    num_beams: NumBeams | None = None
    model: str | None = Field(
        None, description="a caption model id from /v1/models; the first one when absent"
    )


class Caption(_Response):
    index: int
    caption: str
    tokens: int = Field(description="tokens the model generated (the prompt not counted)")


class CaptionResponse(_Response):
    model: str
    data: list[Caption]
    usage: TokenUsage


class VQARequest(_Request):
    """One image and ``question`` or ``questions`` about it."""

    image: Media
    question: VLText | None = None
    questions: list[VLText] | None = Field(None, min_length=1, max_length=32)
    max_tokens: MaxTokens | None = None
    num_beams: NumBeams | None = None
    top_k: TopK | None = None
    model: str | None = Field(None, description="a vqa model id from /v1/models; the first one when absent")


class ScoredAnswer(_Response):
    answer: str
    probability: float


class VQAAnswer(_Response):
    index: int
    question: str
    answer: str
    tokens: int
    answers: list[ScoredAnswer] = Field(
        default_factory=list, description="ViLT: the top_k answers, best first"
    )


class VQAResponse(_Response):
    model: str
    data: list[VQAAnswer]
    usage: TokenUsage


# ---- OpenAI-compatible vision chat ------------------------------------------------------------
class _OpenAI(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields mmserve has no use for


class ImageURL(_OpenAI):
    url: str = Field(description="a data URL (data:image/...;base64,...); remote URLs are not fetched")
    detail: str | None = None


class ChatContentPart(_OpenAI):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(_OpenAI):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ChatContentPart] | None = None


class StreamOptions(_OpenAI):
    include_usage: bool = False


class ChatCompletionRequest(_OpenAI):
    """OpenAI's chat completions, answered by a vision-language model: the last user message's image
    is captioned (its text, if any, is the caption's prompt) or, for a VQA model, asked its text."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1), NO_BOOL] | None = Field(
        None, description="an upper bound: the model's own limit applies when lower"
    )
    max_completion_tokens: Annotated[int, Field(ge=1), NO_BOOL] | None = Field(
        None, description="as max_tokens"
    )
    temperature: Float | None = Field(
        None, description="accepted; decoding is deterministic (greedy or beam)"
    )
    n: Int | None = Field(None, description="only 1")
    tools: list[dict[str, Any]] | None = Field(None, description="not supported: 400")
    tool_choice: str | dict[str, Any] | None = Field(None, description="not supported: 400")
    functions: list[dict[str, Any]] | None = Field(None, description="not supported: 400")
    logprobs: bool | None = Field(None, description="not supported: 400 when true")
    top_logprobs: Int | None = Field(None, description="not supported: 400")


class ChatResponseMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Response):
    index: int = 0
    message: ChatResponseMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletionResponse(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: TokenUsage


class ChatDelta(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Response):
    index: int = 0
    delta: ChatDelta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(_Response):
    """One server-sent event of a streamed completion (``data: {...}``); the stream ends with
    ``data: [DONE]``. The last chunk with a ``finish_reason`` carries ``usage``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: TokenUsage | None = None


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
    quality: dict[str, Any] | None = Field(
        None,
        description="a fine-tuned adapter's measured figures: R@1/R@5 before (base space) and after on "
        "train, photo-held-out val and test, the split rule, and whether it beats its base on val",
    )


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(_Response):
    status: str
    deployments: dict[str, str] = Field(default_factory=dict)


# ---- search indexes -----------------------------------------------------------------------
IndexName = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9_-]{0,47}$", description="lowercase letters, digits, '_', '-'")
]
MetaValue = str | int | float | bool


class CreateIndexRequest(_Request):
    name: IndexName


class IndexInfo(_Response):
    name: str
    encoder: str = Field(description="the image embedder that built the index")
    space: str = Field(description="the embedding space: text queries must come from the same space")
    dim: int
    count: int
    created: int


class IndexList(_Response):
    data: list[IndexInfo]


THUMBNAIL_KEY = "thumbnail"  # metadata key of an item's small picture (a data URL), which hits return
MAX_THUMBNAIL_CHARS = 12_000  # its longest data URL (other metadata strings: 1024 chars)


class IndexItem(_Request):
    image: Media | None = None
    path: str | None = Field(None, description="a server-side file under the configured search.allowed_root")
    metadata: dict[str, MetaValue] = Field(
        default_factory=dict,
        description=(
            "up to 32 keys of strings (<= 1024 chars), numbers or booleans; 'thumbnail' may hold a "
            f"data:image/jpeg|png|webp;base64 URL of up to {MAX_THUMBNAIL_CHARS} chars"
        ),
    )


class AddItemsRequest(_Request):
    items: list[IndexItem] = Field(min_length=1, max_length=MAX_ITEMS)


class AddItemsResponse(_Response):
    ids: list[str] = Field(description="content hashes (sha256) of the items, in request order")
    added: int
    already_present: int


class QueryRequest(_Request):
    text: NonEmptyText | None = None
    image: Media | None = None
    audio: Media | None = Field(None, description="spoken query: transcribed, then embedded as text")
    top_k: Int = Field(5, ge=1, le=100)
    where: dict[str, MetaValue] = Field(default_factory=dict, description="metadata equality filter")


class Hit(_Response):
    id: str
    score: float
    metadata: dict[str, MetaValue] = Field(default_factory=dict)


class QueryResponse(_Response):
    index: str
    query: str = Field(description="text, image or audio")
    transcript: str | None = Field(None, description="what a spoken query was heard as")
    hits: list[Hit]


class ItemIdsRequest(_Request):
    ids: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(min_length=1, max_length=1000)


class DeleteItemsResponse(_Response):
    deleted: int


class LookupResponse(_Response):
    present: list[str] = Field(description="the requested ids the index holds")


# ---- fusion heads -------------------------------------------------------------------------
class FusionHeadCard(_Response):
    id: str
    kind: str
    labels: list[str]
    modalities: list[str]
    encoders: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    created: int = 0


class FusionHeadList(_Response):
    data: list[FusionHeadCard]


class FusionResult(_Response):
    head: str
    label: str
    scores: list[LabelScore]
    used: list[str] = Field(description="modalities the head fused")
    missing: list[str] = Field(description="modalities the head knows but the request lacked (masked)")


# ---- composed requests --------------------------------------------------------------------
Modality = Literal["image", "text", "audio"]
TaskId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Task(_Request):
    id: TaskId | None = Field(
        None, description="the key of this task's result; defaults to '<type>' or '<type>-<n>'"
    )


class EmbedTask(_Task):
    type: Literal["embed"]
    modality: Modality


class ClassifyTask(_Task):
    type: Literal["classify"]
    top_k: Int = Field(5, ge=1, le=100)


class ZeroShotTask(_Task):
    type: Literal["zero_shot"]
    labels: list[Label] = Field(min_length=1, max_length=1000)
    template: Template = DEFAULT_TEMPLATE


class TranscribeTask(_Task):
    type: Literal["transcribe"]
    language: str | None = None
    prompt: str | None = Field(None, max_length=2000)
    temperature: Float = Field(0.0, ge=0.0, le=1.0)


class TranslateTask(_Task):
    type: Literal["translate"]
    prompt: str | None = Field(None, max_length=2000)
    temperature: Float = Field(0.0, ge=0.0, le=1.0)


class LanguageTask(_Task):
    type: Literal["language"]


class FeaturesTask(_Task):
    type: Literal["features"]
    features: list[FeatureName] = Field(
        default_factory=lambda: list[FeatureName](["mel", "mfcc", "chroma"]), min_length=1
    )


class FuseTask(_Task):
    type: Literal["fuse"]
    head: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")]


class SearchTask(_Task):
    type: Literal["search"]
    index: IndexName
    query: Modality = Field("text", description="which input is the query; audio is transcribed first")
    top_k: Int = Field(5, ge=1, le=100)
    where: dict[str, MetaValue] = Field(default_factory=dict)


class CaptionTask(_Task):
    type: Literal["caption"]
    prompt: VLText | None = None
    max_tokens: MaxTokens | None = None
    num_beams: NumBeams | None = None
    model: str | None = Field(None, description="a caption model id; the first one when absent")


class VQATask(_Task):
    type: Literal["vqa"]
    question: VLText
    max_tokens: MaxTokens | None = None
    num_beams: NumBeams | None = None
    top_k: TopK | None = None
    model: str | None = Field(None, description="a vqa model id; the first one when absent")


ComposeTask = Annotated[
    EmbedTask
    | ClassifyTask
    | ZeroShotTask
    | TranscribeTask
    | TranslateTask
    | LanguageTask
    | FeaturesTask
    | FuseTask
    | SearchTask
    | CaptionTask
    | VQATask,
    Field(discriminator="type"),
]


class ComposeInputs(_Request):
    image: Media | None = None
    text: NonEmptyText | None = None
    audio: Media | None = None

    def present(self) -> set[str]:
        return {name for name in ("image", "text", "audio") if getattr(self, name) is not None}


class ComposeRequest(_Request):
    inputs: ComposeInputs
    tasks: list[ComposeTask] = Field(min_length=1, max_length=16)
    stream: bool = Field(
        False,
        description=(
            "answer with server-sent events: a 'node' event as each node finishes, then the whole "
            "response, then [DONE] (also chosen by Accept: text/event-stream)"
        ),
    )

    def named_tasks(self) -> list[ComposeTask]:
        """The tasks with their ids filled in: the type, or '<type>-<n>' when a type repeats."""
        counts: dict[str, int] = {}
        for task in self.tasks:
            counts[task.type] = counts.get(task.type, 0) + 1
        seen: dict[str, int] = {}
        out = []
        for task in self.tasks:
            seen[task.type] = seen.get(task.type, 0) + 1
            default = task.type if counts[task.type] == 1 else f"{task.type}-{seen[task.type]}"
            out.append(task.model_copy(update={"id": task.id or default}))
        return out


class DagNode(_Response):
    id: str
    op: str
    deps: list[str]
    started_ms: float = Field(description="when the node started, from the start of the DAG")
    latency_ms: float
    queue_ms: float | None = Field(
        default=None,
        description="time the node's model calls waited for a replica (Serve's queue), summed over its "
        "calls; null for a node that made none (decoding runs in the gateway)",
    )
    replica_ms: float | None = Field(
        default=None,
        description="time from a replica taking the node's model calls to their answers (batch wait, "
        "model forward, transfer), summed over its calls; null as queue_ms",
    )


class Dag(_Response):
    nodes: list[DagNode]
    edges: list[list[str]] = Field(description="[from, to] pairs")


class EmbedResult(_Response):
    """A compose ``embed`` task's vector."""

    model: str
    space: str
    dim: int
    embedding: list[float]


class LanguageResult(_Response):
    """A compose ``language`` task: the spoken language Whisper identified."""

    language: str
    language_probability: float


class CaptionResult(_Response):
    """A compose ``caption`` task."""

    model: str
    caption: str
    tokens: int


class VQAResult(_Response):
    """A compose ``vqa`` task."""

    model: str
    question: str
    answer: str
    answers: list[ScoredAnswer] = Field(default_factory=list)


# What each compose task type answers (the required fields tell them apart).
ComposeResult = (
    EmbedResult
    | ClassifyResponse
    | ZeroShotResponse
    | VerboseTranscriptionResponse
    | FeaturesResponse
    | QueryResponse
    | FusionResult
    | LanguageResult
    | CaptionResult
    | VQAResult
)


class ComposeResponse(_Response):
    results: dict[str, ComposeResult] = Field(description="one entry per task id")
    dag: Dag
    latency_ms: float
    request_id: str | None = Field(
        default=None, description="the request's id, as in the answer's X-Request-ID header"
    )


class ComposeNodeEvent(DagNode):
    """A streamed compose's event for one finished node: the node, and the typed result of each
    task it answers (none for the shared steps: decoding, embedding an input)."""

    type: Literal["node"] = "node"
    results: dict[str, ComposeResult] = Field(default_factory=dict, description="task id -> its result")
