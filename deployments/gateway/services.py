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
from config.tenants import OPEN, Tenant
from deployments import tenancy
from deployments.gateway.parsing import off_loop
from deployments.info import EncoderInfo
from deployments.metrics import observe_cache
from models.embed_cache import EmbedCache
from deployments.quota import LEASE_S
from models.errors import Forbidden, Incompatible, InvalidInput, NotFound, Throttled, Unauthorized, Unavailable
from models.media import MediaLimits, decode_audio, decode_image

MODALITIES = ("image", "text", "audio")


@dataclass(frozen=True)
class Media:
    """Decoding of untrusted image and audio bytes, off the event loop, within the configured limits."""

    limits: MediaLimits

    async def decode(self, modality: str, raw: bytes, param: str) -> np.ndarray:
        tenancy.current().require_modality(modality)
        decoder = decode_image if modality == "image" else decode_audio
        return await off_loop(decoder, raw, limits=self.limits, param=param)


class Encoders:
    """The image, text and audio deployments, what each says about itself, and the embedding cache
    (keyed by tenant, embedder and content hash, so one tenant cannot time another's uploads)."""

    def __init__(self, handles: dict[str, DeploymentHandle], media: Media, cache: EmbedCache) -> None:
        self.handles, self.media, self.cache = handles, media, cache
        self._infos: dict[str, EncoderInfo] | None = None

    def use(self, modality: str) -> DeploymentHandle:
        """The handle for a modality, if the request's tenant may call it."""
        tenancy.current().require_modality(modality)
        return self.handles[modality]

    async def infos(self) -> dict[str, EncoderInfo]:
        if self._infos is None:
            found = await asyncio.gather(*(self.handles[m].info.remote() for m in MODALITIES))
            self._infos = dict(zip(MODALITIES, found))
        return self._infos

    async def info(self, modality: str) -> EncoderInfo:
        return (await self.infos())[modality]

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        return await self.use("text").embed.remote(texts)

    async def embed_media(self, modality: str, raw: bytes, param: str, decoded: np.ndarray | None = None) -> np.ndarray:
        """One image or audio embedding; the same bytes are decoded and embedded once while cached."""
        tenancy.current().require_modality(modality)
        scope = f"{tenancy.current().id}/{(await self.info(modality)).model}"
        key = await off_loop(s.content_id, raw)
        row = self.cache.get(scope, key)
        observe_cache(modality, row is not None)
        if row is None:
            if decoded is None:
                decoded = await self.media.decode(modality, raw, param)
            row = await self.use(modality).embed.remote(decoded)
            self.cache.put(scope, key, row)
        return row

    async def embed_many(self, modality: str, raws: list[bytes], param: str) -> np.ndarray:
        rows = await asyncio.gather(*(self.embed_media(modality, r, f"{param}[{i}]") for i, r in enumerate(raws)))
        return np.stack(rows)

    async def label_embeddings(self, labels: list[str], template: str) -> np.ndarray:
        if "{}" not in template:
            raise InvalidInput("template must contain '{}' where the label goes", param="template")
        return await self.embed_texts([template.format(label) for label in labels])

    async def shared_space(self) -> EncoderInfo:
        """The image encoder's info, when image and text embeddings are comparable."""
        image, text = await self.info("image"), await self.info("text")
        if image.space != text.space:
            raise Incompatible(f"the image and text encoders do not share an embedding space: {image.space} vs "
                               f"{text.space}")
        return image

    async def embedders(self) -> dict[str, str]:
        """Model id -> modality, for the ids /v1/models lists as embedders."""
        infos = await self.infos()
        ids = {info.model: modality for modality, info in infos.items()}
        return {**ids, audio_encoder_id(infos["audio"]): "audio"}

    async def spoken_query(self, audio: np.ndarray, *, param: str) -> tuple[np.ndarray, str]:
        """Transcribe (language detected), then embed what was heard as text."""
        heard = await self.use("audio").transcribe.remote(audio, {"task": "transcribe", "language": None})
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

    async def search(self, name: str, vector: np.ndarray, *, space: str, top_k: int, where: dict) -> list[s.Hit]:
        hits = await self.store().search.remote(tenancy.current().id, name, vector, space=space, top_k=top_k,
                                                where=where)
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


VL_SWITCH = "vision_language.enabled"


@dataclass(frozen=True)
class VLModel:
    """A captioning or VQA model the VisionLanguage deployment serves."""

    id: str
    task: str  # "caption" or "vqa"
    engine: str
    device: str


class VisionLanguage:
    """The VisionLanguage deployment: captions and answers, routed (multiplexed) by model id."""

    def __init__(self, handle: DeploymentHandle | None, media: Media) -> None:
        self.handle, self.media = handle, media
        self._models: list[VLModel] | None = None

    @property
    def enabled(self) -> bool:
        return self.handle is not None

    def deployment(self) -> DeploymentHandle:
        if self.handle is None:
            raise Unavailable(f"captioning and visual question answering are off in this deployment: set "
                              f"{VL_SWITCH}: true and list vision_language.models in the app's args "
                              f"(no vision-language weights are packaged for offline use)")
        return self.handle

    async def models(self) -> list[VLModel]:
        """The configured models; empty when the deployment is off."""
        if self.handle is None:
            return []
        if self._models is None:
            self._models = [VLModel(**m) for m in await self.handle.models.remote()]
        return self._models

    async def pick(self, model: str | None, task: str | None) -> VLModel:
        """The model a request names (it must do ``task`` when given), or the first that does ``task``."""
        self.deployment()
        known = await self.models()
        if model is None:
            found = next((m for m in known if m.task == task), None)
            if found is None:
                raise NotFound(f"no {task} model is configured (vision_language.models)", param="model")
            return found
        found = next((m for m in known if m.id == model), None)
        if found is None:
            ids = ", ".join(m.id for m in known)
            raise NotFound(f"model '{model}' is not a vision-language model here; known: {ids}", param="model")
        if task is not None and found.task != task:
            raise Incompatible(f"model '{model}' does {found.task}, not {task}", param="model")
        return found

    async def image(self, raw: bytes, param: str) -> np.ndarray:
        return await self.media.decode("image", raw, param)

    async def run(self, model: VLModel, image: np.ndarray, text: str | None, *, max_tokens: int | None = None,
                  num_beams: int | None = None, top_k: int | None = None, clamp: bool = False) -> dict:
        """One caption or answer (the replica batches concurrent calls); ``clamp``: a max_tokens over
        the model's limit is lowered to it instead of refused."""
        options = {"max_tokens": max_tokens, "num_beams": num_beams, "top_k": top_k, "clamp": clamp}
        return await self.deployment().options(multiplexed_model_id=model.id).run.remote(image, text, options)


def _limit_message(tenant: Tenant, limit: str, wait: float) -> str:
    if limit == "max_concurrent":
        return (f"tenant '{tenant.id}' already has {tenant.max_concurrent} requests in flight (its max_concurrent); "
                f"retry after {wait:.2f}s")
    rate = tenant.rate_limit
    return (f"tenant '{tenant.id}' is over its rate limit of {rate.requests_per_second:g} requests/s "
            f"(burst {rate.burst}); retry after {wait:.2f}s")


class Admission:
    """Who is calling (API key -> tenant) and whether their quota admits one more request.

    Concurrency leases are short-lived in the QuotaKeeper and renewed here while their requests
    run, so a gateway replica that dies frees its tenants' slots within seconds. Addresses that
    keep failing authentication are throttled (429) before their keys are even checked."""

    def __init__(self, directory: tenancy.Directory | None, quota: DeploymentHandle | None, *,
                 failures: tenancy.FailedLogins | None = None) -> None:
        self.directory, self.quota = directory, quota
        self.failures = failures or tenancy.FailedLogins()
        self.held: dict[str, set[str]] = {}  # tenant -> leases this replica holds
        self._renewing: asyncio.Task | None = None

    def authenticate(self, headers, address: str) -> Tenant:
        if self.directory is None:
            return OPEN
        self.failures.check(address)
        try:
            return self.directory.authenticate(tenancy.key_from_headers(headers))
        except Unauthorized:
            self.failures.record(address)
            raise

    async def acquire(self, tenant: Tenant) -> str | None:
        """A lease from the shared QuotaKeeper, or Throttled with the wait a retry needs."""
        if self.quota is None or (tenant.rate_limit is None and tenant.max_concurrent is None):
            return None
        rate = tenant.rate_limit.requests_per_second if tenant.rate_limit else None
        burst = tenant.rate_limit.burst if tenant.rate_limit else 1
        lease, wait, limit = await self.quota.acquire.remote(tenant.id, rate, burst, tenant.max_concurrent)
        if lease is None:
            raise Throttled(_limit_message(tenant, limit, wait), retry_after=wait)
        self.held.setdefault(tenant.id, set()).add(lease)
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.get_running_loop().create_task(self._renew_forever())
        return lease

    def release(self, tenant_id: str, lease: str) -> None:
        self.held.get(tenant_id, set()).discard(lease)
        self.quota.release.remote(tenant_id, lease)  # fire and forget: the response need not wait

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            for tenant_id, leases in list(self.held.items()):
                if leases:
                    self.quota.renew.remote(tenant_id, sorted(leases))


@dataclass
class Services:
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
        named = dict(zip(("VisionEncoder", "TextEncoder", "AudioModel"),
                         (self.encoders.handles[m] for m in MODALITIES)))
        return {**named, **self.optional}
