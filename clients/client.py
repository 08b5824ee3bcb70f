"""A typed synchronous client for the mmserve HTTP API, built on the shared wire schemas."""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import httpx
from pydantic import BaseModel

from clients import schemas as s

R = TypeVar("R", bound=BaseModel)
MediaInput = bytes | str | Path


class MMServeError(Exception):
    """An error answered by the server, carrying its status and ``{"error": ...}`` body."""

    def __init__(self, status: int, error_type: str, message: str, param: str | None = None) -> None:
        super().__init__(f"{status} {error_type}: {message}" + (f" (param: {param})" if param else ""))
        self.status, self.type, self.message, self.param = status, error_type, message, param


def _read(media: MediaInput) -> bytes:
    return media if isinstance(media, bytes) else Path(media).read_bytes()


def _b64(media: MediaInput) -> str:
    return s.encode_media(_read(media))


class Client:
    """``Client("http://127.0.0.1:8000")``; media arguments take bytes or a file path."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 120.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _post(self, path: str, body: dict, schema: type[R]) -> R:
        return schema.model_validate(self._send("POST", path, json=body).json())

    # ---- service ----
    def ready(self) -> s.Health:
        return s.Health.model_validate(self._send("GET", "/readyz").json())

    def models(self) -> s.ModelList:
        return s.ModelList.model_validate(self._send("GET", "/v1/models").json())

    # ---- embeddings ----
    def embed_text(self, texts: list[str]) -> s.EmbeddingResponse:
        return self._post("/v1/embeddings/text", {"texts": texts}, s.EmbeddingResponse)

    def embed_images(self, images: list[MediaInput]) -> s.EmbeddingResponse:
        return self._post("/v1/embeddings/image", {"images": [_b64(i) for i in images]}, s.EmbeddingResponse)

    def embed_audio(self, clips: list[MediaInput]) -> s.EmbeddingResponse:
        return self._post("/v1/embeddings/audio", {"audio": [_b64(c) for c in clips]}, s.EmbeddingResponse)

    # ---- vision ----
    def classify(self, image: MediaInput, *, top_k: int = 5) -> s.ClassifyResponse:
        return self._post("/v1/classify", {"image": _b64(image), "top_k": top_k}, s.ClassifyResponse)

    def zero_shot(self, image: MediaInput, labels: list[str], *, template: str = "a photo of a {}") -> s.ZeroShotResponse:
        body = {"image": _b64(image), "labels": labels, "template": template}
        return self._post("/v1/zero-shot", body, s.ZeroShotResponse)

    def retrieval(self, images: list[MediaInput], texts: list[str], *, top_k: int = 5) -> s.RetrievalResponse:
        body = {"images": [_b64(i) for i in images], "texts": texts, "top_k": top_k}
        return self._post("/v1/retrieval", body, s.RetrievalResponse)

    # ---- audio ----
    def transcribe(self, audio: MediaInput, *, language: str | None = None, prompt: str | None = None,
                   temperature: float = 0.0) -> s.VerboseTranscriptionResponse:
        fields = {"language": language, "prompt": prompt, "temperature": temperature}
        return self._speech("/v1/audio/transcriptions", audio, fields)

    def translate(self, audio: MediaInput, *, prompt: str | None = None,
                  temperature: float = 0.0) -> s.VerboseTranscriptionResponse:
        return self._speech("/v1/audio/translations", audio, {"prompt": prompt, "temperature": temperature})

    def subtitles(self, audio: MediaInput, *, fmt: str = "srt", task: str = "transcribe") -> str:
        path = "/v1/audio/transcriptions" if task == "transcribe" else "/v1/audio/translations"
        return self._send("POST", path, files={"file": ("audio", _read(audio))},
                          data={"response_format": fmt}).text

    def _speech(self, path: str, audio: MediaInput, fields: dict) -> s.VerboseTranscriptionResponse:
        data = {k: str(v) for k, v in fields.items() if v is not None} | {"response_format": "verbose_json"}
        response = self._send("POST", path, files={"file": ("audio", _read(audio))}, data=data)
        return s.VerboseTranscriptionResponse.model_validate(response.json())

    def features(self, audio: MediaInput, *, features: list[str] | None = None) -> s.FeaturesResponse:
        body = {"audio": _b64(audio), "features": features or ["mel", "mfcc", "chroma"]}
        return self._post("/v1/audio/features", body, s.FeaturesResponse)


def _error(response: httpx.Response) -> MMServeError:
    try:
        detail = s.ErrorResponse.model_validate(response.json()).error
        return MMServeError(response.status_code, detail.type, detail.message, detail.param)
    except ValueError:
        return MMServeError(response.status_code, "http_error", response.text[:500])
