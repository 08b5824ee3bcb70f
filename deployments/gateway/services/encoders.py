"""The image, text and audio encoder deployments as the gateway uses them: what each says about
itself, and embeddings through the embedding cache."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from ray.serve.handle import DeploymentHandle

from api import schemas as s
from config.tenants import Tenant
from deployments.gateway.calls import call
from deployments.gateway.parsing import HASH_SPEEDUP, maybe_off_loop
from deployments.gateway.services.media import MediaDecoder
from deployments.info import EncoderInfo
from deployments.metrics import observe_cache
from models.embed_cache import EmbedCache
from models.errors import Incompatible, InvalidInput

MODALITIES = ("image", "text", "audio")
FANOUT = 8  # items of one request in flight to a model deployment at once
INFO_TTL_S = 2.0  # how long the gateway trusts what an encoder said about its model and space


class Encoders:
    """The image, text and audio deployments, what each says about itself, and the embedding cache
    (keyed by tenant, embedder and content hash, so one tenant cannot time another's uploads)."""

    def __init__(self, handles: dict[str, DeploymentHandle], media: MediaDecoder, cache: EmbedCache) -> None:
        self.handles, self.media, self.cache = handles, media, cache
        self._infos: dict[str, EncoderInfo] | None = None
        self._infos_at = 0.0

    def use(self, tenant: Tenant, modality: str) -> DeploymentHandle:
        """The handle for a modality, if ``tenant`` may call it."""
        tenant.require_modality(modality)
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

    async def embed_texts(self, tenant: Tenant, texts: list[str]) -> np.ndarray:
        return await call(self.use(tenant, "text").embed, texts)

    async def embed_media(
        self, tenant: Tenant, modality: str, raw: bytes, param: str, decoded: np.ndarray | None = None
    ) -> np.ndarray:
        """One image or audio embedding; the same bytes are decoded and embedded once while cached."""
        tenant.require_modality(modality)
        info = await self.info(modality)
        scope = f"{tenant.id}/{info.model}/{info.space}"  # a new checkpoint never reuses old rows
        key = await maybe_off_loop(len(raw) // HASH_SPEEDUP, s.content_id, raw)
        row = self.cache.get(scope, key)
        observe_cache(modality, row is not None)
        if row is None:
            if decoded is None:
                decoded = await self.media.for_encoder(tenant, modality, raw, param, info)
            row = await call(self.use(tenant, modality).embed, decoded, content=key)  # hashed once
            self.cache.put(scope, key, row)
        return row

    async def embed_many(
        self, tenant: Tenant, modality: str, raws: list[bytes], param: str, names: list[str] | None = None
    ) -> np.ndarray:
        """Embed several items, at most ``FANOUT`` in flight at once: enough to fill a batch, while one
        64-item request cannot fill a model deployment's bounded queue by itself (it would get 503)."""
        gate = asyncio.Semaphore(FANOUT)

        async def one(raw: bytes, name: str) -> np.ndarray:
            async with gate:
                return await self.embed_media(tenant, modality, raw, name)

        names = names or [f"{param}[{i}]" for i in range(len(raws))]
        return np.stack(await asyncio.gather(*(one(r, n) for r, n in zip(raws, names))))

    async def label_embeddings(self, tenant: Tenant, labels: list[str], template: str) -> np.ndarray:
        """One prompt per label. The schema (``api.schemas.Template``) let through only templates with
        one bare ``{}`` and bounded its length and the labels', so each prompt is within the text cap."""
        return await self.embed_texts(tenant, [template.format(label) for label in labels])

    async def embed_transcript(self, tenant: Tenant, text: str, *, param: str) -> np.ndarray:
        if not text.strip():
            raise InvalidInput("no speech was recognised in the audio query", param=param)
        return (await self.embed_texts(tenant, [text]))[0]

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

    async def query_space(self, kind: str) -> str:
        """The space a query lands in: the image embedder's for images, the text encoder's for
        text and for speech (searched through its transcript)."""
        return (await self.info("image" if kind == "image" else "text")).space


def audio_encoder_id(info: EncoderInfo) -> str:
    """The id /v1/models and /v1/embeddings give Whisper's pooled-encoder embeddings."""
    return f"{info.model}-encoder"
