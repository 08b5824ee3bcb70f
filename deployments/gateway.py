"""Gateway: the HTTP ingress. Authenticates and admits each request, validates and decodes it,
then calls the model deployments through DeploymentHandles, sending independent calls out in
parallel. Search and compose routes live in their own modules as mixins of ``Gateway``."""

import asyncio
import hashlib
import logging
import time

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from clients import schemas as s
from deployments import responses, tenancy
from deployments.compose import ComposeRoutes
from deployments.http_app import app
from deployments.metrics import observe_cache
from deployments.openapi import body, install as install_openapi
from deployments.parsing import parse_body
from deployments.search_routes import SearchRoutes
from models.embed_cache import EmbedCache
from models.errors import Incompatible, InvalidInput, NotFound, Throttled
from models.media import MediaLimits, decode_audio, decode_image

log = logging.getLogger("ray.serve")


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_image_side: int = Field(1024, ge=64)
    max_audio_seconds: float = Field(600.0, gt=0)
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    ready_timeout_s: float = Field(5.0, gt=0)
    tenants_file: str | None = Field(None, description="YAML tenants file; without one the service runs open")
    embed_cache_size: int = Field(4096, ge=0, description="image/audio embeddings kept by content hash (0: off)")
    allowed_root: str | None = Field(None, description="server-side folder that index items may name by path")

    def limits(self) -> MediaLimits:
        return MediaLimits(max_image_pixels=self.max_image_pixels, max_image_side=self.max_image_side,
                           max_audio_seconds=self.max_audio_seconds, max_bytes=self.max_upload_bytes)


def _media(value: str, param: str) -> bytes:
    try:
        return s.media_bytes(value)
    except ValueError as exc:
        raise InvalidInput(f"'{param}' is not base64 or a data URL: {exc}", param=param) from exc


# Before @serve.ingress: it freezes a copy of the app at class definition.
install_openapi(app, [s.ErrorResponse, s.OpenAIEmbeddingRequest, s.TextEmbedRequest, s.ImageEmbedRequest,
                      s.AudioEmbedRequest, s.ZeroShotRequest, s.ClassifyRequest, s.RetrievalRequest,
                      s.TranscriptionRequest, s.TranslationRequest, s.FeaturesRequest, s.ComposeRequest,
                      s.CreateIndexRequest, s.AddItemsRequest, s.QueryRequest, s.ItemIdsRequest])


@serve.deployment(name="Gateway", max_ongoing_requests=64)
@serve.ingress(app)
class Gateway(SearchRoutes, ComposeRoutes):
    def __init__(self, vision: DeploymentHandle, text: DeploymentHandle, audio: DeploymentHandle,
                 settings: dict | None = None, *, search: DeploymentHandle | None = None,
                 fusion: DeploymentHandle | None = None, quota: DeploymentHandle | None = None) -> None:
        self.vision, self.text, self.audio = vision, text, audio
        self.search_index, self.fusion, self.quota = search, fusion, quota
        self.settings = GatewaySettings.model_validate(settings or {})
        self.limits = self.settings.limits()
        self.cache = EmbedCache(capacity=self.settings.embed_cache_size)
        self.directory = self._directory()
        self._infos: dict[str, dict] | None = None
        self.started = int(time.time())

    # ---- admission (called by the middleware in deployments/http_app.py) ----------------
    def _directory(self) -> tenancy.Directory | None:
        if self.settings.tenants_file is None:
            log.warning("no tenants file: mmserve is OPEN, every request runs as tenant '%s'", tenancy.OPEN_TENANT)
            return None
        tenants = tenancy.load_tenants(self.settings.tenants_file)
        log.info("tenants: %s", ", ".join(t.id for t in tenants))
        return tenancy.Directory.build(tenants)

    def authenticate(self, headers) -> tenancy.Tenant:
        if self.directory is None:
            return tenancy.OPEN
        return self.directory.authenticate(tenancy.key_from_headers(headers))

    async def acquire(self, tenant: tenancy.Tenant) -> str | None:
        """A lease from the shared QuotaKeeper, or Throttled with the wait a retry needs."""
        if self.quota is None or (tenant.rate_limit is None and tenant.max_concurrent is None):
            return None
        rate = tenant.rate_limit.requests_per_second if tenant.rate_limit else None
        burst = tenant.rate_limit.burst if tenant.rate_limit else 1
        lease, wait = await self.quota.acquire.remote(tenant.id, rate, burst, tenant.max_concurrent)
        if lease is None:
            raise Throttled(f"tenant '{tenant.id}' is over its request limit; retry after {wait:.2f}s",
                            retry_after=wait)
        return lease

    def release(self, tenant_id: str, lease: str) -> None:
        self.quota.release.remote(tenant_id, lease)  # fire and forget: the response need not wait

    def use(self, modality: str) -> DeploymentHandle:
        """The handle for a modality, if the request's tenant may call it."""
        tenancy.current().require_modality(modality)
        return {"image": self.vision, "text": self.text, "audio": self.audio}[modality]

    # ---- helpers ------------------------------------------------------------------------
    async def infos(self) -> dict[str, dict]:
        if self._infos is None:
            vision, text, audio = await asyncio.gather(
                self.vision.info.remote(), self.text.info.remote(), self.audio.info.remote())
            self._infos = {"vision": vision, "text": text, "audio": audio}
        return self._infos

    async def _image(self, raw: bytes, param: str) -> np.ndarray:
        tenancy.current().require_modality("image")
        return await asyncio.to_thread(decode_image, raw, limits=self.limits, param=param)

    async def _audio(self, raw: bytes, param: str) -> np.ndarray:
        tenancy.current().require_modality("audio")
        return await asyncio.to_thread(decode_audio, raw, limits=self.limits, param=param)

    async def _decode(self, modality: str, raw: bytes, param: str) -> np.ndarray:
        return await (self._image(raw, param) if modality == "image" else self._audio(raw, param))

    async def _embedder_id(self, modality: str) -> str:
        infos = await self.infos()
        return infos["vision"]["embedder"] if modality == "image" else infos["audio"]["model"]

    async def _embed_raw(self, modality: str, raw: bytes, param: str, decoded: np.ndarray | None = None) -> np.ndarray:
        """One image or audio embedding; the same bytes are decoded and embedded only once while
        they stay in the cache (keyed by embedder id and content hash)."""
        tenancy.current().require_modality(modality)
        model, key = await self._embedder_id(modality), hashlib.sha256(raw).hexdigest()
        row = self.cache.get(model, key)
        observe_cache(modality, row is not None)
        if row is None:
            if decoded is None:
                decoded = await self._decode(modality, raw, param)
            row = await self.use(modality).embed.remote(decoded)
            self.cache.put(model, key, row)
        return row

    async def _embed_media(self, modality: str, raws: list[bytes], param: str) -> np.ndarray:
        return np.stack(await asyncio.gather(*(self._embed_raw(modality, r, f"{param}[{i}]") for i, r in enumerate(raws))))

    async def _embedders(self) -> dict[str, str]:
        """Model id -> modality, for the ids /v1/models lists as embedders."""
        i = await self.infos()
        return {i["text"]["model"]: "text", i["vision"]["embedder"]: "image", i["audio"]["model"]: "audio",
                f"{i['audio']['model']}-encoder": "audio"}

    async def _shared_space(self) -> dict:
        infos = await self.infos()
        if infos["vision"]["space"] != infos["text"]["space"]:
            raise Incompatible("the image and text encoders do not share an embedding space: "
                               f"{infos['vision']['space']} vs {infos['text']['space']}")
        return infos["vision"]

    # ---- service ------------------------------------------------------------------------
    @app.get("/healthz", response_model=s.Health)
    async def healthz(self) -> s.Health:
        return s.Health(status="ok")

    @app.get("/readyz", response_model=s.Health, responses={503: {"model": s.Health}})
    async def readyz(self):
        names = {"VisionEncoder": self.vision, "TextEncoder": self.text, "AudioModel": self.audio,
                 "SearchIndex": self.search_index, "FusionHead": self.fusion, "QuotaKeeper": self.quota}
        names = {name: handle for name, handle in names.items() if handle is not None}
        results = await asyncio.gather(
            *(asyncio.wait_for(h.ping.remote(), self.settings.ready_timeout_s) for h in names.values()),
            return_exceptions=True)
        states = {n: ("ok" if r == "ok" else f"not ready: {type(r).__name__}") for n, r in zip(names, results)}
        ready = all(v == "ok" for v in states.values())
        body = s.Health(status="ready" if ready else "not_ready", deployments=states)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get("/v1/models", response_model=s.ModelList)
    async def models(self) -> s.ModelList:
        i = await self.infos()
        v, t, a = i["vision"], i["text"], i["audio"]
        cards = [
            s.ModelCard(id=v["classifier"], modality="image", task="classification", device=v["device"]),
            s.ModelCard(id=v["embedder"], modality="image", task="embedding", space=v["space"], dim=v["dim"],
                        device=v["device"]),
            s.ModelCard(id=t["model"], modality="text", task="embedding", space=t["space"], dim=t["dim"],
                        device=t["device"]),
            s.ModelCard(id=a["model"], modality="audio", task="transcription", device=a["device"]),
            s.ModelCard(id=f"{a['model']}-encoder", modality="audio", task="embedding", dim=a["dim"],
                        device=a["device"]),
        ]
        for card in cards:
            card.created = self.started
        return s.ModelList(data=cards)

    @app.get("/v1/stats")
    async def stats(self) -> dict:
        """Batch sizes each model replica really ran (the replica that answered, per deployment)."""
        v, t, a = await asyncio.gather(self.vision.batch_stats.remote(), self.text.batch_stats.remote(),
                                       self.audio.batch_stats.remote())
        return {"VisionEncoder": v, "TextEncoder": t, "AudioModel": a}

    # ---- embeddings ---------------------------------------------------------------------
    @app.post("/v1/embeddings", openapi_extra=body(s.OpenAIEmbeddingRequest, multipart=False),
              response_model=s.OpenAIEmbeddingResponse)
    async def openai_embeddings(self, request: Request) -> s.OpenAIEmbeddingResponse:
        """OpenAI-compatible embeddings for every modality; ``model`` (or ``modality``) picks it."""
        body = await parse_body(request, s.OpenAIEmbeddingRequest)
        modality = (await self._embedders()).get(body.model)
        if modality is None:
            raise NotFound(f"model '{body.model}' is not an embedding model here; see /v1/models", param="model")
        if body.modality not in (None, modality):
            raise Incompatible(f"model '{body.model}' embeds {modality}, not {body.modality}", param="modality")
        if modality == "text":
            rows = await self.use("text").embed.remote(body.inputs())
        else:
            rows = await self._embed_media(modality, [_media(x, f"input[{n}]") for n, x in enumerate(body.inputs())],
                                           "input")
        if body.dimensions not in (None, rows.shape[1]):
            raise InvalidInput(f"'{body.model}' has {rows.shape[1]} dimensions, not {body.dimensions}",
                               param="dimensions")
        return s.OpenAIEmbeddingResponse(model=body.model, data=[
            s.OpenAIEmbedding(index=n, embedding=responses.encode(row, body.encoding_format)) for n, row in enumerate(rows)])

    @app.post("/v1/embeddings/text", openapi_extra=body(s.TextEmbedRequest), response_model=s.EmbeddingResponse)
    async def embed_text(self, request: Request) -> s.EmbeddingResponse:
        body = await parse_body(request, s.TextEmbedRequest)
        rows, infos = await asyncio.gather(self.use("text").embed.remote(body.texts), self.infos())
        return responses.embeddings(infos["text"], rows)

    @app.post("/v1/embeddings/image", openapi_extra=body(s.ImageEmbedRequest), response_model=s.EmbeddingResponse)
    async def embed_image(self, request: Request) -> s.EmbeddingResponse:
        body = await parse_body(request, s.ImageEmbedRequest)
        rows = await self._embed_media("image", body.images, "images")
        return responses.embeddings((await self.infos())["vision"], rows)

    @app.post("/v1/embeddings/audio", openapi_extra=body(s.AudioEmbedRequest), response_model=s.EmbeddingResponse)
    async def embed_audio(self, request: Request) -> s.EmbeddingResponse:
        body = await parse_body(request, s.AudioEmbedRequest)
        rows = await self._embed_media("audio", body.audio, "audio")
        return responses.embeddings((await self.infos())["audio"], rows)

    # ---- vision -------------------------------------------------------------------------
    @app.post("/v1/zero-shot", openapi_extra=body(s.ZeroShotRequest), response_model=s.ZeroShotResponse)
    async def zero_shot(self, request: Request) -> s.ZeroShotResponse:
        body = await parse_body(request, s.ZeroShotRequest)
        info, img, txt = await asyncio.gather(self._shared_space(), self._embed_raw("image", body.image, "image"),
                                              self._label_embeddings(body.labels, body.template))
        return responses.zero_shot_response(info, img, txt, body.labels)

    async def _label_embeddings(self, labels: list[str], template: str) -> np.ndarray:
        if "{}" not in template:
            raise InvalidInput("template must contain '{}' where the label goes", param="template")
        return await self.use("text").embed.remote([template.format(label) for label in labels])

    @app.post("/v1/classify", openapi_extra=body(s.ClassifyRequest), response_model=s.ClassifyResponse)
    async def classify(self, request: Request) -> s.ClassifyResponse:
        body = await parse_body(request, s.ClassifyRequest)
        image = await self._image(body.image, "image")
        predictions, infos = await asyncio.gather(self.use("image").classify.remote(image, body.top_k), self.infos())
        return s.ClassifyResponse(model=infos["vision"]["classifier"], predictions=predictions)

    @app.post("/v1/retrieval", openapi_extra=body(s.RetrievalRequest), response_model=s.RetrievalResponse)
    async def retrieval(self, request: Request) -> s.RetrievalResponse:
        body = await parse_body(request, s.RetrievalRequest)
        info, img, txt = await asyncio.gather(self._shared_space(), self._embed_media("image", body.images, "images"),
                                              self.use("text").embed.remote(body.texts))
        sim = img @ txt.T
        return s.RetrievalResponse(model=info["embedder"], similarity=sim.tolist(),
                                   image_to_text=[responses.top(row, body.top_k) for row in sim],
                                   text_to_image=[responses.top(col, body.top_k) for col in sim.T])

    # ---- audio --------------------------------------------------------------------------
    @app.post("/v1/audio/transcriptions", openapi_extra=body(s.TranscriptionRequest),
              responses={200: {"model": s.VerboseTranscriptionResponse}})
    async def transcriptions(self, request: Request) -> Response:
        body = await parse_body(request, s.TranscriptionRequest)
        return await self._speech(body, task="transcribe", language=body.language)

    @app.post("/v1/audio/translations", openapi_extra=body(s.TranslationRequest),
              responses={200: {"model": s.VerboseTranscriptionResponse}})
    async def translations(self, request: Request) -> Response:
        body = await parse_body(request, s.TranslationRequest)
        return await self._speech(body, task="translate", language=None)

    async def _speech(self, body, *, task: str, language: str | None) -> Response:
        audio = await self._audio(body.file, "file")
        options = {"task": task, "language": language, "prompt": body.prompt, "temperature": body.temperature}
        result = s.VerboseTranscriptionResponse.model_validate(await self.use("audio").transcribe.remote(audio, options))
        return responses.render_transcript(result, body.response_format)

    @app.post("/v1/audio/features", openapi_extra=body(s.FeaturesRequest), response_model=s.FeaturesResponse)
    async def features(self, request: Request) -> s.FeaturesResponse:
        body = await parse_body(request, s.FeaturesRequest)
        audio = await self._audio(body.audio, "audio")
        kinds = list(dict.fromkeys(body.features))
        feats = await self.use("audio").features.remote(audio, kinds)
        return responses.features_response(audio, feats)
