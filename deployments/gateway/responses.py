"""Pure helpers that shape model outputs into wire responses (shared by routes and compose).
The ones that serialise large arrays are called through ``off_loop``."""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from api import schemas as s
from deployments.gateway.parsing import off_loop
from deployments.info import EncoderInfo
from models.audio_features import frame_rate
from models.media import SAMPLE_RATE
from models.subtitles import to_srt, to_vtt


async def rendered(build: Callable[..., BaseModel], *args) -> JSONResponse:
    """Build a response model holding large arrays and serialise it, both in a worker thread."""
    return await off_loop(lambda: JSONResponse(build(*args).model_dump(mode="json")))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def top(scores: np.ndarray, k: int) -> list[s.Match]:
    order = np.argsort(-scores)[:k]
    return [s.Match(index=int(i), score=float(scores[i])) for i in order]


def embeddings(info: EncoderInfo, rows: np.ndarray) -> s.EmbeddingResponse:
    data = [s.Embedding(index=i, embedding=row.tolist()) for i, row in enumerate(rows)]
    return s.EmbeddingResponse(model=info.model, space=info.space, dim=int(rows.shape[1]), data=data)


def embedding_result(info: EncoderInfo, row: np.ndarray) -> s.EmbedResult:
    return s.EmbedResult(model=info.model, space=info.space, dim=int(row.shape[0]), embedding=row.tolist())


def zero_shot_response(
    info: EncoderInfo, image: np.ndarray, labels_emb: np.ndarray, labels: list[str]
) -> s.ZeroShotResponse:
    probs = softmax(info.logit_scale * (labels_emb @ image))
    ranked = sorted(zip(labels, probs.tolist()), key=lambda p: -p[1])
    return s.ZeroShotResponse(
        model=info.model, labels=[s.LabelScore(label=label, score=p) for label, p in ranked]
    )


def features_response(audio: np.ndarray, feats: dict[str, np.ndarray]) -> s.FeaturesResponse:
    return s.FeaturesResponse(
        sample_rate=SAMPLE_RATE,
        frame_rate=frame_rate(),
        duration=round(audio.size / SAMPLE_RATE, 3),
        features={k: s.FeatureMatrix(shape=list(v.shape), data=v.tolist()) for k, v in feats.items()},
    )


def openai_embeddings(model: str, rows: np.ndarray, fmt: str) -> s.OpenAIEmbeddingResponse:
    return s.OpenAIEmbeddingResponse(
        model=model,
        data=[s.OpenAIEmbedding(index=n, embedding=encode(row, fmt)) for n, row in enumerate(rows)],
    )


def encode(row: np.ndarray, fmt: str) -> list[float] | str:
    """OpenAI's base64 encoding is the little-endian float32 bytes of the vector."""
    if fmt == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row.tolist()


def render_transcript(result: s.VerboseTranscriptionResponse, fmt: str) -> Response:
    if fmt == "text":
        return PlainTextResponse(result.text)
    if fmt == "srt":
        return PlainTextResponse(to_srt(result.segments), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(result.segments), media_type="text/vtt")
    if fmt == "verbose_json":
        return JSONResponse(result.model_dump(exclude_none=True))  # 'words' only when asked for
    return JSONResponse(s.TranscriptionResponse(text=result.text).model_dump())
