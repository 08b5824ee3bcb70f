"""Pure helpers that shape model outputs into wire responses (shared by routes and compose)."""
from __future__ import annotations

import base64

import numpy as np
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from clients import schemas as s
from models.audio_features import frame_rate
from models.media import SAMPLE_RATE
from models.subtitles import to_srt, to_vtt


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def top(scores: np.ndarray, k: int) -> list[s.Match]:
    order = np.argsort(-scores)[:k]
    return [s.Match(index=int(i), score=float(scores[i])) for i in order]


def embeddings(info: dict, rows: np.ndarray) -> s.EmbeddingResponse:
    model = info.get("embedder") or info["model"]
    data = [s.Embedding(index=i, embedding=row.tolist()) for i, row in enumerate(rows)]
    return s.EmbeddingResponse(model=model, space=info.get("space", f"audio:{model}"), dim=int(rows.shape[1]),
                               data=data)


def zero_shot_response(info: dict, image: np.ndarray, labels_emb: np.ndarray, labels: list[str]) -> s.ZeroShotResponse:
    probs = softmax(info["logit_scale"] * (labels_emb @ image))
    ranked = sorted(zip(labels, probs.tolist()), key=lambda p: -p[1])
    return s.ZeroShotResponse(model=info["embedder"], labels=[s.LabelScore(label=l, score=p) for l, p in ranked])


def features_response(audio: np.ndarray, feats: dict[str, np.ndarray]) -> s.FeaturesResponse:
    return s.FeaturesResponse(
        sample_rate=SAMPLE_RATE, frame_rate=frame_rate(), duration=round(audio.size / SAMPLE_RATE, 3),
        features={k: s.FeatureMatrix(shape=list(v.shape), data=v.tolist()) for k, v in feats.items()})


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
        return JSONResponse(result.model_dump())
    return JSONResponse(s.TranscriptionResponse(text=result.text).model_dump())
