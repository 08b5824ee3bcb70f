"""What a batch does with each request line, on the same ``models/`` backends as the online path.

Two steps, each a Ray Data stage in ``pipeline``:

- ``prepare`` (stateless tasks): parse and validate a line (JSON, the line's shape, its ``url``, the
  body against the endpoint's schema). A bad line becomes its error result here and goes no further.
- ``ModelWorker`` (an actor pool): decode the media and run the backend on a whole batch of lines at
  once, rendering each line's body as the online route would. A line whose image or audio does not
  decode (or breaks a limit: pixels, bytes, seconds) fails alone.

A result is ``{"line", "custom_id", "status_code", "body"}``, with ``body`` as JSON text; an error's
body is the one error shape. The status of each domain error comes from the gateway's one mapping
(``Plan.statuses``, built by ``deployments/gateway/errors.py``), by error class name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ValidationError

from api import schemas as s
from api.batch import BatchRequestLine
from deployments import vl_requests
from models.errors import InvalidInput, MMServeError
from models.media import MediaLimits, decode_audio, decode_image
from models.transcript import SpeechOptions, Transcript

if TYPE_CHECKING:  # torch loads in the workers only, never in the gateway that builds a Plan
    import torch

BODIES: dict[str, type[BaseModel]] = {
    "/v1/embeddings": s.OpenAIEmbeddingRequest,
    "/v1/embeddings/image": s.ImageEmbedRequest,
    "/v1/classify": s.ClassifyRequest,
    "/v1/audio/transcriptions": s.TranscriptionRequest,
    "/v1/captions": s.CaptionRequest,
    "/v1/vqa": s.VQARequest,
}
MODALITY = {  # what the tenant must be allowed, as online
    "/v1/embeddings": "text",
    "/v1/embeddings/image": "image",
    "/v1/classify": "image",
    "/v1/audio/transcriptions": "audio",
    "/v1/captions": "image",
    "/v1/vqa": "image",
}
POOL = {  # the batch.<pool> that runs the endpoint's lines
    **MODALITY,
    "/v1/captions": "vision_language",
    "/v1/vqa": "vision_language",
}


@dataclass(frozen=True)
class Plan:
    """Everything a batch's runner and workers need, picklable (built by the gateway's Batches service)."""

    tenant: str
    batch_id: str
    endpoint: str
    store: str
    block_size: int
    pool: dict[str, Any]
    vision_spec: dict[str, Any]
    text_spec: dict[str, Any]
    limits: MediaLimits
    embedders: dict[str, str]  # model id -> modality (what /v1/models lists as embedders)
    infos: dict[str, dict[str, Any]]  # modality -> {"model", "space", "task_model"}
    statuses: dict[str, int] = field(default_factory=dict)  # error class name -> HTTP status
    speech_spec: dict[str, Any] = field(default_factory=dict)  # the served AudioModel's
    vl_specs: list[dict[str, Any]] = field(default_factory=list)  # vision_language.models (empty: off)

    @property
    def modality(self) -> str:
        return MODALITY[self.endpoint]


# ---- results ------------------------------------------------------------------------------------
def ok(line: int, custom_id: str, body: dict) -> dict:
    return {"line": line, "custom_id": custom_id, "status_code": 200, "body": json.dumps(body)}


def failed(plan: Plan, line: int, custom_id: str | None, exc: BaseException) -> dict:
    if isinstance(exc, ValidationError):
        kind, etype, param = type(exc).__name__, "invalid_request_error", _loc(exc)  # 422, as online
        message = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
    elif isinstance(exc, MMServeError):
        kind, etype, message, param = type(exc).__name__, exc.error_type, exc.message, exc.param
    else:
        kind, etype, message, param = "InvalidInput", "invalid_request_error", str(exc), None
    error = {"type": etype, "message": message, "param": param}
    status = plan.statuses.get(kind, 400)
    return {"line": line, "custom_id": custom_id, "status_code": status, "body": json.dumps({"error": error})}


def _loc(exc: ValidationError) -> str | None:
    errors = exc.errors()
    return ".".join(map(str, errors[0]["loc"])) or None if errors else None


# ---- step 1: prepare --------------------------------------------------------------------------
def _custom_id(text: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    found = value.get("custom_id") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def parse(plan: Plan, text: str) -> tuple[str, BaseModel]:
    """The line's custom_id and its body validated as the endpoint's schema (raises on a bad line)."""
    try:
        request = BatchRequestLine.model_validate_json(text)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidInput("the line is not valid JSON", param="line") from None
        raise
    if request.url != plan.endpoint:
        raise InvalidInput(f"url '{request.url}' is not this batch's endpoint {plan.endpoint}", param="url")
    try:
        body = BODIES[plan.endpoint].model_validate(request.body)
    except ValidationError as exc:
        media = _media_error(exc)
        if media is not None:
            raise media from None
        raise
    if isinstance(body, s.OpenAIEmbeddingRequest):
        _check_embedding_request(plan, body)
    if isinstance(body, s.TranscriptionRequest):
        _check_transcription_request(body)
    if isinstance(body, s.CaptionRequest | s.VQARequest):
        _check_vl_request(plan, body)
    return request.custom_id, body


def _media_error(exc: ValidationError) -> InvalidInput | None:
    """Undecodable base64 is a 400 (as online), not a schema violation."""
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, s.MediaError):
            param = "body." + ".".join(map(str, error["loc"]))
            return InvalidInput(f"'{param}': {cause}", param=param)
    return None


def _check_embedding_request(plan: Plan, body: s.OpenAIEmbeddingRequest) -> None:
    from models.errors import Incompatible, NotFound

    modality = plan.embedders.get(body.model)
    if modality not in ("text", "image"):
        raise NotFound(f"model '{body.model}' is not a text or image embedding model here", param="model")
    if body.modality not in (None, modality):
        raise Incompatible(f"model '{body.model}' embeds {modality}, not {body.modality}", param="modality")
    for n, text in enumerate(body.inputs()):
        if modality == "text" and len(text) > s.MAX_TEXT_CHARS:
            raise InvalidInput(
                f"input[{n}] is longer than {s.MAX_TEXT_CHARS} characters", param=f"input[{n}]"
            )


def _check_transcription_request(body: s.TranscriptionRequest) -> None:
    """What the online route answers and a result file cannot hold: an event stream, plain text."""
    if body.stream:
        raise InvalidInput("a batch writes each result whole: 'stream' must be false", param="stream")
    if body.response_format not in s.JSON_RESPONSE_FORMATS:
        raise InvalidInput(
            f"a batch's results are JSON: response_format must be json or verbose_json, not "
            f"'{body.response_format}'",
            param="response_format",
        )


def _check_vl_request(plan: Plan, body: s.CaptionRequest | s.VQARequest) -> None:
    """The model the line names and its images or questions, as online before any image decodes."""
    known = [(spec["id"], spec["task"]) for spec in plan.vl_specs]
    if isinstance(body, s.CaptionRequest):
        vl_requests.choose(known, body.model, "caption")
        vl_requests.images(body)
    else:
        vl_requests.choose(known, body.model, "vqa")
        vl_requests.questions(body)


def prepare(plan: Plan, batch: dict[str, np.ndarray]) -> dict[str, list]:
    """Ray Data stage 1: each line checked; a bad one becomes its error result (``status_code`` set)."""
    out: dict[str, list] = {"line": [], "custom_id": [], "text": [], "status_code": [], "body": []}
    for line, text in zip(batch["line"].tolist(), batch["text"].tolist()):
        try:
            custom_id, _ = parse(plan, text)
            row = {"line": line, "custom_id": custom_id, "text": text, "status_code": 0, "body": ""}
        except (ValidationError, MMServeError) as exc:
            row = {**failed(plan, line, _custom_id(text), exc), "text": ""}
        for key in out:
            out[key].append(row[key])
    return out


# ---- step 2: the models -------------------------------------------------------------------------
class ModelWorker:
    """Ray Data stage 2 (one per actor of the pool): the backends load once, lazily, as the online
    replicas load them (``models.registry``), then run whole batches of lines."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._text = self._classifier = self._embedder = self._speech = self._vl = None
        import torch

        from models.runtime import resolve_device

        self.threads = max(1, int(plan.pool.get("num_cpus", 1) or 1))
        torch.set_num_threads(self.threads)
        # as an online replica: CUDA when the pool's actors were granted (a fraction of) a GPU
        self.device = resolve_device(want_gpu=bool(plan.pool.get("num_gpus")))

    # the backends
    def text_model(self):
        if self._text is None:
            from models.registry import TextModelSpec, load_text

            self._text = load_text(TextModelSpec.model_validate(self.plan.text_spec), device=self.device)
        return self._text

    def classifier(self):
        if self._classifier is None:
            from models.registry import VisionModelSpec, load_classifier

            self._classifier = load_classifier(
                VisionModelSpec.model_validate(self.plan.vision_spec), device=self.device
            )
        return self._classifier

    def embedder(self):
        if self._embedder is None:
            from models.registry import TextModelSpec, VisionModelSpec, load_embedder

            self._embedder = load_embedder(
                VisionModelSpec.model_validate(self.plan.vision_spec),
                TextModelSpec.model_validate(self.plan.text_spec),
                classifier=self.classifier(),
                device=self.device,
            )
        return self._embedder

    def speech(self):
        if self._speech is None:
            from models.registry import SpeechModelSpec, load_speech

            spec = SpeechModelSpec.model_validate(self.plan.speech_spec)
            if not spec.cpu_threads:  # CTranslate2's default takes every core; the pool grants num_cpus
                spec = spec.model_copy(update={"cpu_threads": self.threads})
            self._speech = load_speech(spec, device=self.device)
        return self._speech

    def _decode(self, raw: bytes, model, param: str) -> torch.Tensor:
        size = getattr(model, "input_size", None)
        pixels = decode_image(
            raw, limits=self.plan.limits, param=param, min_side=size.resize if size else None
        )
        return model.preprocess(pixels)

    def _images(self, model, images: list[list[bytes]]) -> list[list[torch.Tensor] | MMServeError]:
        """Each line's images decoded and preprocessed; a line with one bad image is its error."""
        out: list[list[torch.Tensor] | MMServeError] = []
        for raws in images:
            try:
                out.append([self._decode(raw, model, f"images[{n}]") for n, raw in enumerate(raws)])
            except MMServeError as exc:
                out.append(exc)
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = [dict(zip(batch, values)) for values in zip(*(batch[k].tolist() for k in batch))]
        done = [r for r in rows if r["status_code"]]
        todo = [r for r in rows if not r["status_code"]]
        parsed = [(r["line"], *parse(self.plan, r["text"])) for r in todo]
        results = [{k: r[k] for k in ("line", "custom_id", "status_code", "body")} for r in done]
        if parsed:
            results += self._run(parsed)
        return {k: [r[k] for r in results] for k in ("line", "custom_id", "status_code", "body")}

    def _run(self, parsed: list[tuple[int, str, Any]]) -> list[dict]:
        endpoint = self.plan.endpoint
        if endpoint == "/v1/classify":
            return self._classify(parsed)
        if endpoint == "/v1/embeddings/image":
            return self._embed_images(parsed)
        if endpoint == "/v1/audio/transcriptions":
            return self._transcribe(parsed)
        if POOL[endpoint] == "vision_language":
            return self._vision_language(parsed)
        return self._openai_embeddings(parsed)

    def _forward(self, model_fn, tensors: list[torch.Tensor]) -> np.ndarray:
        import torch

        return model_fn(torch.stack(tensors)) if tensors else np.zeros((0, 0), dtype=np.float32)

    def _embed_lines(self, lines: list[list[bytes]]) -> tuple[list[np.ndarray | MMServeError], str]:
        embedder = self.embedder()
        decoded = self._images(embedder, lines)
        flat = [t for d in decoded if isinstance(d, list) for t in d]
        rows = self._forward(embedder.embed, flat)
        out: list[np.ndarray | MMServeError] = []
        at = 0
        for d in decoded:
            if isinstance(d, MMServeError):
                out.append(d)
            else:
                out.append(rows[at : at + len(d)])
                at += len(d)
        return out, self.plan.infos["image"]["model"]

    def _embed_images(self, parsed) -> list[dict]:
        info = self.plan.infos["image"]
        vectors, _ = self._embed_lines([body.images for _, _, body in parsed])
        return [
            failed(self.plan, line, cid, v)
            if isinstance(v, MMServeError)
            else ok(line, cid, _embeddings(info, v))
            for (line, cid, _), v in zip(parsed, vectors)
        ]

    def _openai_embeddings(self, parsed) -> list[dict]:
        modality = {line: self.plan.embedders[body.model] for line, _, body in parsed}
        texts = [(line, body) for line, _, body in parsed if modality[line] == "text"]
        images = [(line, body) for line, _, body in parsed if modality[line] == "image"]
        found: dict[int, np.ndarray | MMServeError] = {}
        if texts:
            flat = [t for _, body in texts for t in body.inputs()]
            rows = self.text_model().embed(flat)
            at = 0
            for line, body in texts:
                found[line] = rows[at : at + len(body.inputs())]
                at += len(body.inputs())
        decodable = []
        for line, body in images:
            try:
                decodable.append((line, [s.media_bytes(x) for x in body.inputs()]))
            except s.MediaError as exc:
                found[line] = InvalidInput(f"'input': {exc}", param="input")
        if decodable:
            vectors, _ = self._embed_lines([raws for _, raws in decodable])
            found.update({line: v for (line, _), v in zip(decodable, vectors)})
        return [
            failed(self.plan, line, cid, found[line])
            if isinstance(found[line], MMServeError)
            else ok(line, cid, _openai(body, found[line]))
            for line, cid, body in parsed
        ]

    def _classify(self, parsed) -> list[dict]:
        classifier = self.classifier()
        decoded = self._images(classifier, [[body.image] for _, _, body in parsed])
        flat = [d[0] for d in decoded if isinstance(d, list)]
        probs = iter(self._forward(classifier.probs, flat))
        out = []
        for (line, cid, body), d in zip(parsed, decoded):
            if isinstance(d, MMServeError):
                out.append(failed(self.plan, line, cid, d))
                continue
            p = next(probs)
            top = np.argsort(-p)[: body.top_k]
            predictions = [
                {"index": int(i), "label": classifier.labels[i], "score": float(p[i])} for i in top
            ]
            out.append(
                ok(line, cid, {"model": self.plan.infos["image"]["task_model"], "predictions": predictions})
            )
        return out

    def _clip(self, engine, body: s.TranscriptionRequest) -> tuple[np.ndarray, SpeechOptions]:
        """The line's audio decoded within the limits and its options checked against the model, in
        the online order (the gateway decodes, the AudioModel checks)."""
        from models.speech import check_options

        audio = decode_audio(body.file, limits=self.plan.limits, param="file")
        options = SpeechOptions(task="transcribe", **body.decoding())
        check_options(engine, options)
        return audio, options

    def _transcribe(self, parsed) -> list[dict]:
        """Short greedy clips of the whole batch share one Whisper pass (``transcribe_many``), as the
        AudioModel batches concurrent requests online."""
        from models.speech import transcribe_many

        engine = self.speech()
        ready: dict[int, tuple[np.ndarray, SpeechOptions]] = {}
        refused: dict[int, MMServeError] = {}
        for line, _, body in parsed:
            try:
                ready[line] = self._clip(engine, body)
            except MMServeError as exc:
                refused[line] = exc
        heard = transcribe_many(engine, [c for c, _ in ready.values()], [o for _, o in ready.values()])
        found = dict(zip(ready, heard))
        return [
            failed(self.plan, line, cid, refused[line])
            if line in refused
            else ok(line, cid, _transcript(found[line], body.response_format))
            for line, cid, body in parsed
        ]

    def _vision_language(self, parsed) -> list[dict]:
        from deployments.batch.vl_lines import VLLines

        if self._vl is None:
            self._vl = VLLines(self.plan.vl_specs, self.plan.limits, device=self.device)
        answers = self._vl.answer(self.plan.endpoint, [body for _, _, body in parsed])
        return [
            failed(self.plan, line, cid, a) if isinstance(a, MMServeError) else ok(line, cid, a)
            for (line, cid, _), a in zip(parsed, answers)
        ]


def _transcript(result: Transcript, response_format: str) -> dict:
    import dataclasses

    verbose = s.VerboseTranscriptionResponse.model_validate(dataclasses.asdict(result))
    return verbose.json_body(response_format)


def _vectors(rows: np.ndarray) -> list[list[float]]:
    return np.asarray(rows, dtype=np.float32).tolist()


def _embeddings(info: dict, rows: np.ndarray) -> dict:
    data = [{"index": i, "embedding": v} for i, v in enumerate(_vectors(rows))]
    return {"model": info["model"], "space": info["space"], "dim": int(rows.shape[1]), "data": data}


def _openai(body: s.OpenAIEmbeddingRequest, rows: np.ndarray) -> dict:
    import base64

    def encode(row: list[float]) -> list[float] | str:
        if body.encoding_format == "base64":
            return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")
        return row

    data = [{"object": "embedding", "index": n, "embedding": encode(v)} for n, v in enumerate(_vectors(rows))]
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
