"""Gateway: the HTTP ingress. Validates and decodes requests, then calls the model deployments
through DeploymentHandles, sending independent calls out in parallel."""

import asyncio
import base64
import logging
import time

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from clients import schemas as s
from deployments import http_errors
from deployments.metrics import observe_request
from deployments.openapi import body, install as install_openapi
from deployments.parsing import parse_body
from models.audio_features import frame_rate
from models.errors import Incompatible, InvalidInput, NotFound
from models.media import SAMPLE_RATE, MediaLimits, decode_audio, decode_image
from models.subtitles import to_srt, to_vtt

log = logging.getLogger("ray.serve")
app = FastAPI(title="mmserve", version="0.1.0",
              description="Multimodal inference on Ray Serve: vision, text and audio deployments behind one gateway.")
http_errors.install(app)


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_image_side: int = Field(1024, ge=64)
    max_audio_seconds: float = Field(600.0, gt=0)
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    ready_timeout_s: float = Field(5.0, gt=0)

    def limits(self) -> MediaLimits:
        return MediaLimits(max_image_pixels=self.max_image_pixels, max_image_side=self.max_image_side,
                           max_audio_seconds=self.max_audio_seconds, max_bytes=self.max_upload_bytes)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _top(scores: np.ndarray, k: int) -> list[s.Match]:
    order = np.argsort(-scores)[:k]
    return [s.Match(index=int(i), score=float(scores[i])) for i in order]


def _embeddings(info: dict, rows: np.ndarray) -> s.EmbeddingResponse:
    model = info.get("embedder") or info["model"]
    data = [s.Embedding(index=i, embedding=row.tolist()) for i, row in enumerate(rows)]
    return s.EmbeddingResponse(model=model, space=info.get("space", f"audio:{model}"), dim=int(rows.shape[1]),
                               data=data)


def _media(value: str, param: str) -> bytes:
    try:
        return s.media_bytes(value)
    except ValueError as exc:
        raise InvalidInput(f"'{param}' is not base64 or a data URL: {exc}", param=param) from exc


def _encode(row: np.ndarray, fmt: str) -> list[float] | str:
    """OpenAI's base64 encoding is the little-endian float32 bytes of the vector."""
    if fmt == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row.tolist()


def _render_transcript(result: s.VerboseTranscriptionResponse, fmt: str) -> Response:
    if fmt == "text":
        return PlainTextResponse(result.text)
    if fmt == "srt":
        return PlainTextResponse(to_srt(result.segments), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(result.segments), media_type="text/vtt")
    if fmt == "verbose_json":
        return JSONResponse(result.model_dump())
    return JSONResponse(s.TranscriptionResponse(text=result.text).model_dump())


@app.middleware("http")
async def _measure(request: Request, call_next):
    """Requests, errors and latency per route template (unknown paths count as 'unmatched')."""
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        observe_request(route, status, (time.perf_counter() - started) * 1000)


# Before @serve.ingress: it freezes a copy of the app at class definition.
install_openapi(app, [s.ErrorResponse, s.OpenAIEmbeddingRequest, s.TextEmbedRequest, s.ImageEmbedRequest,
                      s.AudioEmbedRequest, s.ZeroShotRequest, s.ClassifyRequest, s.RetrievalRequest,
                      s.TranscriptionRequest, s.TranslationRequest, s.FeaturesRequest])


@serve.deployment(name="Gateway", max_ongoing_requests=64)
@serve.ingress(app)
class Gateway:
    def __init__(self, vision: DeploymentHandle, text: DeploymentHandle, audio: DeploymentHandle,
                 settings: dict | None = None) -> None:
        self.vision, self.text, self.audio = vision, text, audio
        self.settings = GatewaySettings.model_validate(settings or {})
        self.limits = self.settings.limits()
        self._infos: dict[str, dict] | None = None
        self.started = int(time.time())

    # ---- helpers ------------------------------------------------------------------------
    async def infos(self) -> dict[str, dict]:
        if self._infos is None:
            vision, text, audio = await asyncio.gather(
                self.vision.info.remote(), self.text.info.remote(), self.audio.info.remote())
            self._infos = {"vision": vision, "text": text, "audio": audio}
        return self._infos

    async def _image(self, raw: bytes, param: str) -> np.ndarray:
        return await asyncio.to_thread(decode_image, raw, limits=self.limits, param=param)

    async def _images(self, raws: list[bytes], param: str) -> list[np.ndarray]:
        return list(await asyncio.gather(*(self._image(r, f"{param}[{i}]") for i, r in enumerate(raws))))

    async def _audio(self, raw: bytes, param: str) -> np.ndarray:
        return await asyncio.to_thread(decode_audio, raw, limits=self.limits, param=param)

    async def _embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        return np.stack(await asyncio.gather(*(self.vision.embed.remote(i) for i in images)))

    async def _embed_clips(self, raws: list[bytes], param: str) -> np.ndarray:
        clips = await asyncio.gather(*(self._audio(r, f"{param}[{i}]") for i, r in enumerate(raws)))
        return np.stack(await asyncio.gather(*(self.audio.embed.remote(c) for c in clips)))

    async def _embed_media(self, modality: str, raws: list[bytes], param: str) -> np.ndarray:
        if modality == "image":
            return await self._embed_images(await self._images(raws, param))
        return await self._embed_clips(raws, param)

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
        names = {"VisionEncoder": self.vision, "TextEncoder": self.text, "AudioModel": self.audio}
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
            rows = await self.text.embed.remote(body.inputs())
        else:
            rows = await self._embed_media(modality, [_media(x, f"input[{n}]") for n, x in enumerate(body.inputs())],
                                           "input")
        if body.dimensions not in (None, rows.shape[1]):
            raise InvalidInput(f"'{body.model}' has {rows.shape[1]} dimensions, not {body.dimensions}",
                               param="dimensions")
        return s.OpenAIEmbeddingResponse(model=body.model, data=[
            s.OpenAIEmbedding(index=n, embedding=_encode(row, body.encoding_format)) for n, row in enumerate(rows)])

    @app.post("/v1/embeddings/text", openapi_extra=body(s.TextEmbedRequest), response_model=s.EmbeddingResponse)
    async def embed_text(self, request: Request) -> s.EmbeddingResponse:
        body = await parse_body(request, s.TextEmbedRequest)
        rows, infos = await asyncio.gather(self.text.embed.remote(body.texts), self.infos())
        return _embeddings(infos["text"], rows)

    @app.post("/v1/embeddings/image", openapi_extra=body(s.ImageEmbedRequest), response_model=s.EmbeddingResponse)
    async def embed_image(self, request: Request) -> s.EmbeddingResponse:
        body = await parse_body(request, s.ImageEmbedRequest)
        rows = await self._embed_media("image", body.images, "images")
        return _embeddings((await self.infos())["vision"], rows)

    @app.post("/v1/embeddings/audio", openapi_extra=body(s.AudioEmbedRequest), response_model=s.EmbeddingResponse)
    async def embed_audio(self, request: Request) -> s.EmbeddingResponse:
        body = await parse_body(request, s.AudioEmbedRequest)
        rows = await self._embed_media("audio", body.audio, "audio")
        return _embeddings((await self.infos())["audio"], rows)

    # ---- vision -------------------------------------------------------------------------
    @app.post("/v1/zero-shot", openapi_extra=body(s.ZeroShotRequest), response_model=s.ZeroShotResponse)
    async def zero_shot(self, request: Request) -> s.ZeroShotResponse:
        body = await parse_body(request, s.ZeroShotRequest)
        if "{}" not in body.template:
            raise InvalidInput("template must contain '{}' where the label goes", param="template")
        image = await self._image(body.image, "image")
        info, img, txt = await asyncio.gather(self._shared_space(), self.vision.embed.remote(image),
                                              self.text.embed.remote([body.template.format(l) for l in body.labels]))
        probs = _softmax(info["logit_scale"] * (txt @ img))
        ranked = sorted(zip(body.labels, probs.tolist()), key=lambda p: -p[1])
        return s.ZeroShotResponse(model=info["embedder"], labels=[s.LabelScore(label=l, score=p) for l, p in ranked])

    @app.post("/v1/classify", openapi_extra=body(s.ClassifyRequest), response_model=s.ClassifyResponse)
    async def classify(self, request: Request) -> s.ClassifyResponse:
        body = await parse_body(request, s.ClassifyRequest)
        image = await self._image(body.image, "image")
        predictions, infos = await asyncio.gather(self.vision.classify.remote(image, body.top_k), self.infos())
        return s.ClassifyResponse(model=infos["vision"]["classifier"], predictions=predictions)

    @app.post("/v1/retrieval", openapi_extra=body(s.RetrievalRequest), response_model=s.RetrievalResponse)
    async def retrieval(self, request: Request) -> s.RetrievalResponse:
        body = await parse_body(request, s.RetrievalRequest)
        images = await self._images(body.images, "images")
        info, img, txt = await asyncio.gather(self._shared_space(), self._embed_images(images),
                                              self.text.embed.remote(body.texts))
        sim = img @ txt.T
        return s.RetrievalResponse(model=info["embedder"], similarity=sim.tolist(),
                                   image_to_text=[_top(row, body.top_k) for row in sim],
                                   text_to_image=[_top(col, body.top_k) for col in sim.T])

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
        result = s.VerboseTranscriptionResponse.model_validate(await self.audio.transcribe.remote(audio, options))
        return _render_transcript(result, body.response_format)

    @app.post("/v1/audio/features", openapi_extra=body(s.FeaturesRequest), response_model=s.FeaturesResponse)
    async def features(self, request: Request) -> s.FeaturesResponse:
        body = await parse_body(request, s.FeaturesRequest)
        audio = await self._audio(body.audio, "audio")
        kinds = list(dict.fromkeys(body.features))
        feats = await self.audio.features.remote(audio, kinds)
        return s.FeaturesResponse(
            sample_rate=SAMPLE_RATE, frame_rate=frame_rate(), duration=round(audio.size / SAMPLE_RATE, 3),
            features={k: s.FeatureMatrix(shape=list(v.shape), data=v.tolist()) for k, v in feats.items()})
