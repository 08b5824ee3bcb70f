"""Typed clients for the mmserve HTTP API, sync (``Client``) and async (``AsyncClient``).

Both are built from one list of routes (``_Routes``): each method describes its request once,
and the transport (httpx sync or async) sends it. Responses are parsed into the same pydantic
schemas the gateway validates with. Retries (``RetryPolicy``), with exponential backoff that
honours ``Retry-After``:

- 429 (a refusal before any work ran) on every route;
- on idempotent routes only (every route but ``drop_index``: inference is pure, and index writes are
  idempotent by content hash): connection errors, 502, 503 and 504, and a 5xx whose body is not the
  server's error shape (the proxy's own answer when the gateway replica serving it died);
- on a non-idempotent route, a connection that was never made; nothing else is retried blindly.

Every request carries ``X-Request-Timeout`` (the client's timeout), so the server gives up (504) and
cancels its work when the client would stop waiting anyway. Other errors raise ``MMServeError``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from api import schemas as s

MediaInput = bytes | str | Path
RAW_TYPE = "application/octet-stream"
REFUSED = 429  # nothing ran: safe to retry on any route
RETRY_STATUSES = (502, 503, 504)  # retried on idempotent routes
# The request never reached the server: safe on any route.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The connection broke while the server may have worked: idempotent routes only.
BROKEN = (*NOT_SENT, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class MMServeError(Exception):
    """An error answered by the server, carrying its status, its ``{"error": ...}`` body and the
    request's id (the body's, else the ``X-Request-ID`` header's): quote it to find the request in
    the server's logs."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(_describe(status, error_type, message, param, request_id))
        self.status, self.type, self.message, self.param = status, error_type, message, param
        self.request_id = request_id


def _describe(status: int, error_type: str, message: str, param: str | None, request_id: str | None) -> str:
    notes = [f"param: {param}"] * bool(param) + [f"request id: {request_id}"] * bool(request_id)
    return f"{status} {error_type}: {message}" + (f" ({'; '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: ``base * 2**attempt`` seconds (with jitter), or the server's
    Retry-After. Which answers are retried is in the module docstring."""

    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        header = None if response is None else response.headers.get("retry-after")
        if header is not None:
            try:
                return min(float(header), self.max_delay_s)
            except ValueError:
                pass
        return min(self.base_delay_s * 2**attempt * (1 + 0.1 * random.random()), self.max_delay_s)


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    schema: type[BaseModel] | None = None  # None: return the response text
    kwargs: dict[str, Any] = field(default_factory=dict)
    idempotent: bool = True  # running it twice leaves the same state and answer


def _shaped(response: httpx.Response) -> bool:
    """Whether the body is the server's ``{"error": ...}`` shape (the gateway answered it)."""
    try:
        s.ErrorResponse.model_validate(response.json())
        return True
    except ValueError:
        return False


def _retryable(call: _Call, response: httpx.Response) -> bool:
    if response.status_code == REFUSED:
        return True
    if not call.idempotent:
        return False
    return response.status_code in RETRY_STATUSES or (response.status_code >= 500 and not _shaped(response))


def _retryable_error(call: _Call, exc: Exception) -> bool:
    return isinstance(exc, BROKEN if call.idempotent else NOT_SENT)


def _read(media: MediaInput) -> bytes:
    return media if isinstance(media, bytes) else Path(media).read_bytes()


def _b64(media: MediaInput) -> str:
    return s.encode_media(_read(media))


def _error(response: httpx.Response) -> MMServeError:
    header_id = response.headers.get("x-request-id")
    try:
        detail = s.ErrorResponse.model_validate(response.json()).error
    except ValueError:
        return MMServeError(response.status_code, "http_error", response.text[:500], request_id=header_id)
    request_id = detail.request_id or header_id
    return MMServeError(response.status_code, detail.type, detail.message, detail.param, request_id)


def _parse(call: _Call, response: httpx.Response):
    if response.status_code >= 400:
        raise _error(response)
    return response.text if call.schema is None else call.schema.model_validate(response.json())


def _raw(media: MediaInput, params: dict) -> dict:
    """An image as an ``application/octet-stream`` body, the other fields as query parameters: no
    base64 and no body parsing on the server (the image routes take it)."""
    return {"content": _read(media), "params": params, "headers": {"content-type": RAW_TYPE}}


def _files(name: str, media: list[MediaInput], data: dict | None = None) -> dict:
    """A multipart body: each media item a file part (no base64), ``data`` as text fields."""
    return {"files": [(name, (f"{name}{n}", _read(m))) for n, m in enumerate(media)], "data": data or {}}


def _speech_form(audio: MediaInput, fields: dict, fmt: str) -> dict:
    data = {k: str(v) for k, v in fields.items() if v is not None} | {"response_format": fmt}
    return {"files": {"file": ("audio", _read(audio))}, "data": data}


def _present(body: dict) -> dict:
    return {k: v for k, v in body.items() if v is not None}


def _compose_body(
    tasks: list[dict], image: MediaInput | None, text: str | None, audio: MediaInput | None
) -> dict:
    inputs = {
        "image": _b64(image) if image is not None else None,
        "text": text,
        "audio": _b64(audio) if audio is not None else None,
    }
    return {"inputs": _present(inputs), "tasks": tasks}


def server_sent_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """``(event, data)`` for each server-sent event in a stream of lines (the default event name is
    ``message``; ``data: [DONE]`` ends the stream)."""
    event, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif not line and data:
            if data == ["[DONE]"]:
                return
            yield event, "\n".join(data)
            event, data = "message", []


def _compose_event(event: str, data: str) -> s.ComposeNodeEvent | s.ComposeResponse:
    if event == "node":
        return s.ComposeNodeEvent.model_validate_json(data)
    if event == "response":
        return s.ComposeResponse.model_validate_json(data)
    body = json.loads(data)
    error = s.ErrorResponse.model_validate(body).error
    raise MMServeError(body.get("status", 500), error.type, error.message, error.param, error.request_id)


SPEECH_PATHS = {"transcribe": "/v1/audio/transcriptions", "translate": "/v1/audio/translations"}


def _transcript_event(data: str) -> s.TranscriptTextDeltaEvent | s.TranscriptTextDoneEvent:
    body = json.loads(data)
    if body.get("type") == "transcript.text.delta":
        return s.TranscriptTextDeltaEvent.model_validate(body)
    if body.get("type") == "transcript.text.done":
        return s.TranscriptTextDoneEvent.model_validate(body)
    error = s.ErrorResponse.model_validate(body).error
    raise MMServeError(body.get("status", 500), error.type, error.message, error.param, error.request_id)


class _Routes:
    """One method per route. ``_call`` is sync in ``Client`` and async in ``AsyncClient``."""

    def _call(self, call: _Call):
        raise NotImplementedError

    def _json(self, path: str, body: dict, schema: type[BaseModel]):
        return self._call(_Call("POST", path, schema, {"json": body}))

    # ---- service ----
    def health(self):
        return self._call(_Call("GET", "/healthz", s.Health))

    def stats(self):
        return self._call(_Call("GET", "/v1/stats", None))

    def ready(self):
        return self._call(_Call("GET", "/readyz", s.Health))

    def models(self):
        return self._call(_Call("GET", "/v1/models", s.ModelList))

    # ---- embeddings ----
    def embed_text(self, texts: list[str]):
        return self._json("/v1/embeddings/text", {"texts": texts}, s.EmbeddingResponse)

    def embed_images(self, images: list[MediaInput]):
        """One image as the raw body, several as multipart file parts."""
        send = _raw(images[0], {}) if len(images) == 1 else _files("images", images)
        return self._call(_Call("POST", "/v1/embeddings/image", s.EmbeddingResponse, send))

    def embed_audio(self, clips: list[MediaInput]):
        return self._json("/v1/embeddings/audio", {"audio": [_b64(c) for c in clips]}, s.EmbeddingResponse)

    # ---- vision ----
    def classify(self, image: MediaInput, *, top_k: int = 5):
        send = _raw(image, {"top_k": top_k})
        return self._call(_Call("POST", "/v1/classify", s.ClassifyResponse, send))

    def zero_shot(self, image: MediaInput, labels: list[str], *, template: str = "a photo of a {}"):
        """Multipart: up to 1000 labels would not fit a query string."""
        send = _files("image", [image], {"labels": labels, "template": template})
        return self._call(_Call("POST", "/v1/zero-shot", s.ZeroShotResponse, send))

    def retrieval(self, images: list[MediaInput], texts: list[str], *, top_k: int = 5):
        body = {"images": [_b64(i) for i in images], "texts": texts, "top_k": top_k}
        return self._json("/v1/retrieval", body, s.RetrievalResponse)

    # ---- audio ----
    def transcribe(
        self,
        audio: MediaInput,
        *,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
    ):
        form = _speech_form(
            audio, {"language": language, "prompt": prompt, "temperature": temperature}, "verbose_json"
        )
        return self._call(_Call("POST", "/v1/audio/transcriptions", s.VerboseTranscriptionResponse, form))

    def translate(self, audio: MediaInput, *, prompt: str | None = None, temperature: float = 0.0):
        form = _speech_form(audio, {"prompt": prompt, "temperature": temperature}, "verbose_json")
        return self._call(_Call("POST", "/v1/audio/translations", s.VerboseTranscriptionResponse, form))

    def subtitles(
        self, audio: MediaInput, *, fmt: str = "srt", task: str = "transcribe", language: str | None = None
    ):
        path = "/v1/audio/transcriptions" if task == "transcribe" else "/v1/audio/translations"
        fields = {"language": language} if task == "transcribe" else {}
        return self._call(_Call("POST", path, None, _speech_form(audio, fields, fmt)))

    def features(self, audio: MediaInput, *, features: list[str] | None = None):
        body = {"audio": _b64(audio), "features": features or ["mel", "mfcc", "chroma"]}
        return self._json("/v1/audio/features", body, s.FeaturesResponse)

    # ---- vision-language ----
    def captions(
        self,
        images: list[MediaInput],
        *,
        prompt: str | None = None,
        max_tokens: int | None = None,
        num_beams: int | None = None,
        model: str | None = None,
    ):
        body = {
            "images": [_b64(i) for i in images],
            "prompt": prompt,
            "max_tokens": max_tokens,
            "num_beams": num_beams,
            "model": model,
        }
        return self._json("/v1/captions", _present(body), s.CaptionResponse)

    def ask(
        self,
        image: MediaInput,
        questions: str | list[str],
        *,
        max_tokens: int | None = None,
        num_beams: int | None = None,
        top_k: int | None = None,
        model: str | None = None,
    ):
        """Visual question answering: one question or several about one image."""
        many = {"questions": questions} if isinstance(questions, list) else {"question": questions}
        body = {
            "image": _b64(image),
            **many,
            "max_tokens": max_tokens,
            "num_beams": num_beams,
            "top_k": top_k,
            "model": model,
        }
        return self._json("/v1/vqa", _present(body), s.VQAResponse)

    # ---- search indexes ----
    def create_index(self, name: str):
        return self._json("/v1/indexes", {"name": name}, s.IndexInfo)

    def indexes(self):
        return self._call(_Call("GET", "/v1/indexes", s.IndexList))

    def index(self, name: str):
        return self._call(_Call("GET", f"/v1/indexes/{name}", s.IndexInfo))

    def drop_index(self, name: str):
        return self._call(_Call("DELETE", f"/v1/indexes/{name}", None, idempotent=False))  # again: 404

    def add_images(self, name: str, images: list[MediaInput], *, metadata: list[dict] | None = None):
        meta = metadata or [{} for _ in images]
        items = [{"image": _b64(i), "metadata": m} for i, m in zip(images, meta)]
        return self._json(f"/v1/indexes/{name}/items", {"items": items}, s.AddItemsResponse)

    def lookup(self, name: str, ids: list[str]):
        return self._json(f"/v1/indexes/{name}/items/lookup", {"ids": ids}, s.LookupResponse)

    def delete_items(self, name: str, ids: list[str]):
        return self._json(f"/v1/indexes/{name}/items/delete", {"ids": ids}, s.DeleteItemsResponse)

    def query(
        self,
        name: str,
        *,
        text: str | None = None,
        image: MediaInput | None = None,
        audio: MediaInput | None = None,
        top_k: int = 5,
        where: dict | None = None,
    ):
        body = {
            "text": text,
            "image": _b64(image) if image is not None else None,
            "audio": _b64(audio) if audio is not None else None,
            "top_k": top_k,
            "where": where or {},
        }
        return self._json(
            f"/v1/indexes/{name}/query", {k: v for k, v in body.items() if v is not None}, s.QueryResponse
        )

    # ---- composition and fusion ----
    def compose(
        self,
        tasks: list[dict],
        *,
        image: MediaInput | None = None,
        text: str | None = None,
        audio: MediaInput | None = None,
    ):
        return self._json("/v1/compose", _compose_body(tasks, image, text, audio), s.ComposeResponse)

    def fusion_heads(self):
        return self._call(_Call("GET", "/v1/fusion/heads", s.FusionHeadList))


def _headers(api_key: str | None, timeout: float | None) -> dict:
    """The API key, and the client's timeout as the server's deadline, a little shorter, so the server's
    504 (and the cancelling of its work) comes before the client stops listening."""
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return auth | ({"X-Request-Timeout": f"{timeout * 0.95:.3f}"} if timeout else {})


class Client(_Routes):
    """``Client("http://127.0.0.1:8000")``; media arguments take bytes or a file path."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=_headers(api_key, timeout))
        self.retry = retry

    def _call(self, call: _Call):
        for attempt in range(self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                response = self._http.request(call.method, call.path, **call.kwargs)
            except httpx.TransportError as exc:
                if last or not _retryable_error(call, exc):
                    raise
                time.sleep(self.retry.delay(attempt, None))
                continue
            if last or not _retryable(call, response):
                return _parse(call, response)
            time.sleep(self.retry.delay(attempt, response))

    def compose_stream(
        self,
        tasks: list[dict],
        *,
        image: MediaInput | None = None,
        text: str | None = None,
        audio: MediaInput | None = None,
    ) -> Iterator[s.ComposeNodeEvent | s.ComposeResponse]:
        """A composed request, streamed: each node as it finishes (``ComposeNodeEvent``, with the
        results of the tasks it answers), then the whole ``ComposeResponse``. A failure raises
        ``MMServeError``; leaving the loop early closes the stream, and the server cancels the rest."""
        body = {**_compose_body(tasks, image, text, audio), "stream": True}
        with self._http.stream("POST", "/v1/compose", json=body) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            for event, data in server_sent_events(response.iter_lines()):
                yield _compose_event(event, data)

    def transcribe_stream(
        self,
        audio: MediaInput,
        *,
        task: str = "transcribe",
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
    ) -> Iterator[s.TranscriptTextDeltaEvent | s.TranscriptTextDoneEvent]:
        """A transcription (or, with ``task="translate"``, a translation), streamed as OpenAI's events:
        a ``TranscriptTextDeltaEvent`` per decoded segment (the deltas joined are the text), then the
        ``TranscriptTextDoneEvent``. A failure raises ``MMServeError``; leaving the loop early closes
        the stream, and the server stops decoding."""
        fields = {"language": language if task == "transcribe" else None, "prompt": prompt}
        form = _speech_form(audio, {**fields, "temperature": temperature, "stream": "true"}, "json")
        with self._http.stream("POST", SPEECH_PATHS[task], **form) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            for _, data in server_sent_events(response.iter_lines()):
                yield _transcript_event(data)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Routes):
    """The same routes as ``Client``, each a coroutine: ``await AsyncClient().classify(path)``."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=_headers(api_key, timeout))
        self.retry = retry

    async def _call(self, call: _Call):
        for attempt in range(self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                response = await self._http.request(call.method, call.path, **call.kwargs)
            except httpx.TransportError as exc:
                if last or not _retryable_error(call, exc):
                    raise
                await asyncio.sleep(self.retry.delay(attempt, None))
                continue
            if last or not _retryable(call, response):
                return _parse(call, response)
            await asyncio.sleep(self.retry.delay(attempt, response))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
