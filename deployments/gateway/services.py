"""The gateway's services, built once per gateway replica (``Gateway.__init__``) and handed to the
routes through FastAPI dependencies (``deps``). Each wraps DeploymentHandles with what the routes
need from them: tenant checks, decoding, the embedding cache, the index store and fusion heads."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ray.serve.handle import DeploymentHandle

from api import schemas as s
from config.settings import GatewaySettings
from deployments import tenancy
from deployments.gateway.admission import Admission
from deployments.gateway.calls import call
from deployments.gateway.parsing import off_loop
from deployments.gateway.vision_language import VisionLanguage
from deployments.info import EncoderInfo
from deployments.metrics import observe_cache
from models.embed_cache import EmbedCache
from models.errors import Forbidden, Incompatible, InvalidInput, Unavailable
from models.image_input import Transport, for_replica
from models.media import MediaLimits, decode_audio, decode_image

MODALITIES = ("image", "text", "audio")
FANOUT = 8  # items of one request in flight to a model deployment at once
INFO_TTL_S = 2.0  # how long the gateway trusts what an encoder said about its model and space


@dataclass(frozen=True)
class Media:
    """Decoding of untrusted image and audio bytes, off the event loop, within the configured limits."""

    limits: MediaLimits
    image_transport: Transport

    async def decode(self, modality: str, raw: bytes, param: str) -> np.ndarray:
        tenancy.current().require_modality(modality)
        decoder = decode_image if modality == "image" else decode_audio
        return await off_loop(decoder, raw, limits=self.limits, param=param)

    async def for_encoder(self, modality: str, raw: bytes, param: str, info: EncoderInfo):
        """What the embedding call carries: decoded audio, or an image as ``image_transport`` says
        (models/image_input.py); the limits are checked here either way."""
        if modality != "image":
            return await self.decode(modality, raw, param)
        tenancy.current().require_modality(modality)
        return await off_loop(
            for_replica,
            raw,
            transport=self.image_transport,
            size=info.input_size,
            limits=self.limits,
            param=param,
        )


class Encoders:
    """The image, text and audio deployments, what each says about itself, and the embedding cache
    (keyed by tenant, embedder and content hash, so one tenant cannot time another's uploads)."""

    def __init__(self, handles: dict[str, DeploymentHandle], media: Media, cache: EmbedCache) -> None:
        self.handles, self.media, self.cache = handles, media, cache
        self._infos: dict[str, EncoderInfo] | None = None
        self._infos_at = 0.0

    def use(self, modality: str) -> DeploymentHandle:
        """The handle for a modality, if the request's tenant may call it."""
        tenancy.current().require_modality(modality)
        return self.handles[modality]

    async def infos(self) -> dict[str, EncoderInfo]:
        """What the encoders say about themselves, asked again after ``INFO_TTL_S``: a new model
        swapped in by ``user_config`` (a new adapter checkpoint) shows up without a gateway restart."""
        if self._infos is None or time.monotonic() - self._infos_at > INFO_TTL_S:
            found = await asyncio.gather(*(call(self.handles[m].info) for m in MODALITIES))
            self._infos, self._infos_at = dict(zip(MODALITIES, found)), time.monotonic()
        return self._infos

    async def info(self, modality: str) -> EncoderInfo:
        return (await self.infos())[modality]

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        return await call(self.use("text").embed, texts)

    async def embed_media(
        self, modality: str, raw: bytes, param: str, decoded: np.ndarray | None = None
    ) -> np.ndarray:
        """One image or audio embedding; the same bytes are decoded and embedded once while cached."""
        tenancy.current().require_modality(modality)
        info = await self.info(modality)
        scope = f"{tenancy.current().id}/{info.model}/{info.space}"  # a new checkpoint never reuses old rows
        key = await off_loop(s.content_id, raw)
        row = self.cache.get(scope, key)
        observe_cache(modality, row is not None)
        if row is None:
            if decoded is None:
                decoded = await self.media.for_encoder(modality, raw, param, info)
            row = await call(self.use(modality).embed, decoded)
            self.cache.put(scope, key, row)
        return row

    async def embed_many(
        self, modality: str, raws: list[bytes], param: str, names: list[str] | None = None
    ) -> np.ndarray:
        """Embed several items, at most ``FANOUT`` in flight at once: enough to fill a batch, while one
        64-item request cannot fill a model deployment's bounded queue by itself (it would get 503)."""
        gate = asyncio.Semaphore(FANOUT)

        async def one(raw: bytes, name: str) -> np.ndarray:
            async with gate:
                return await self.embed_media(modality, raw, name)

        names = names or [f"{param}[{i}]" for i in range(len(raws))]
        return np.stack(await asyncio.gather(*(one(r, n) for r, n in zip(raws, names))))

    async def label_embeddings(self, labels: list[str], template: str) -> np.ndarray:
        """One prompt per label. The schema (``api.schemas.Template``) let through only templates with
        one bare ``{}`` and bounded its length and the labels', so each prompt is within the text cap."""
        return await self.embed_texts([template.format(label) for label in labels])

    async def shared_space(self) -> EncoderInfo:
        """The image encoder's info, when image and text embeddings are comparable."""
        image, text = await self.info("image"), await self.info("text")
        if image.space != text.space:
            raise Incompatible(
                f"the image and text encoders do not share an embedding space: {image.space} vs {text.space}"
            )
        return image

    async def embedders(self) -> dict[str, str]:
        """Model id -> modality, for the ids /v1/models lists as embedders."""
        infos = await self.infos()
        ids = {info.model: modality for modality, info in infos.items()}
        return {**ids, audio_encoder_id(infos["audio"]): "audio"}

    async def spoken_query(self, audio: np.ndarray, *, param: str) -> tuple[np.ndarray, str]:
        """Transcribe (language detected), then embed what was heard as text."""
        heard = await call(self.use("audio").transcribe, audio, {"task": "transcribe", "language": None})
        return await self.embed_transcript(heard["text"], param=param), heard["text"]

    async def embed_transcript(self, text: str, *, param: str) -> np.ndarray:
        if not text.strip():
            raise InvalidInput("no speech was recognised in the audio query", param=param)
        return (await self.embed_texts([text]))[0]

    async def query_space(self, kind: str) -> str:
        """The space a query lands in: the image embedder's for images, the text encoder's for
        text and for speech (searched through its transcript)."""
        return (await self.info("image" if kind == "image" else "text")).space


def audio_encoder_id(info: EncoderInfo) -> str:
    """The id /v1/models and /v1/embeddings give Whisper's pooled-encoder embeddings."""
    return f"{info.model}-encoder"


INDEX_NAME = s.CreateIndexRequest.model_fields["name"].metadata[0].pattern


def index_name(name: str) -> str:
    """An index name from a path or task, checked against the tenant's allow-list (unknown and
    forbidden look alike)."""
    if not re.fullmatch(INDEX_NAME, name):
        raise InvalidInput(f"index names match {INDEX_NAME}", param="name")
    tenancy.current().require("index", name)
    return name


class Search:
    """The SearchIndex deployment, addressed in the request tenant's namespace."""

    def __init__(self, handle: DeploymentHandle | None, encoders: Encoders, allowed_root: str | None) -> None:
        self.handle, self.encoders, self.allowed_root = handle, encoders, allowed_root

    def store(self) -> DeploymentHandle:
        if self.handle is None:
            raise Unavailable("search is not configured in this deployment (search.enabled: false)")
        return self.handle

    def read_path(self, path: str, param: str) -> bytes:
        root = tenancy.current().allowed_root or self.allowed_root
        if root is None:
            raise Forbidden("server-side paths are off (no allowed_root for this tenant)", param=param)
        if "\x00" in path:
            raise InvalidInput("a path may not contain NUL bytes", param=param)
        base = Path(root)
        target = (base / path).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            raise InvalidInput(f"'{path}' is not a file under the allowed root", param=param)
        return target.read_bytes()

    async def item_bytes(self, item: s.IndexItem, param: str) -> bytes:
        if (item.image is None) == (item.path is None):
            raise InvalidInput("each item needs exactly one of 'image' or 'path'", param=param)
        return item.image if item.image is not None else await off_loop(self.read_path, item.path, param)

    async def query_vector(self, kind: str, value) -> tuple[np.ndarray, str, str | None]:
        """(vector, its embedding space, the transcript of a spoken query)."""
        space = await self.encoders.query_space(kind)
        if kind == "image":
            return await self.encoders.embed_media("image", value, "image"), space, None
        if kind == "text":
            return (await self.encoders.embed_texts([value]))[0], space, None
        audio = await self.encoders.media.decode("audio", value, "audio")
        vector, transcript = await self.encoders.spoken_query(audio, param="audio")
        return vector, space, transcript

    async def search(
        self, name: str, vector: np.ndarray, *, space: str, top_k: int, where: dict
    ) -> list[s.Hit]:
        hits = await call(
            self.store().search, tenancy.current().id, name, vector, space=space, top_k=top_k, where=where
        )
        return [s.Hit(**h) for h in hits]


class Fusion:
    """The FusionHead deployment; heads are routed per tenant with model multiplexing ``<tenant>/<head>``."""

    def __init__(self, handle: DeploymentHandle | None, encoders: Encoders) -> None:
        self.handle, self.encoders = handle, encoders

    def heads(self) -> DeploymentHandle:
        if self.handle is None:
            raise Unavailable("fusion heads are not configured in this deployment (fusion.enabled: false)")
        return self.handle

    def head(self, head: str) -> DeploymentHandle:
        """The FusionHead handle routed (multiplexed) to this tenant's ``head``."""
        tenant = tenancy.current()
        tenant.require("head", head)
        return self.heads().options(multiplexed_model_id=f"{tenant.id}/{head}")

    async def running_encoders(self) -> dict[str, dict]:
        return {m: info.fusion_encoder() for m, info in (await self.encoders.infos()).items()}


@dataclass
class Services:
    """Everything the routes of one gateway replica use."""

    settings: GatewaySettings
    encoders: Encoders
    search: Search
    fusion: Fusion
    admission: Admission
    vision_language: VisionLanguage
    optional: dict[str, DeploymentHandle] = field(default_factory=dict)  # name -> handle, for /readyz
    started: int = field(default_factory=lambda: int(time.time()))

    @property
    def media(self) -> Media:
        return self.encoders.media

    def deployments(self) -> dict[str, DeploymentHandle]:
        """Every deployment this gateway calls, by name (what /readyz checks)."""
        named = dict(
            zip(
                ("VisionEncoder", "TextEncoder", "AudioModel"), (self.encoders.handles[m] for m in MODALITIES)
            )
        )
        return {**named, **self.optional}
