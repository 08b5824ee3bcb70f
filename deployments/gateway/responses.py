"""Pure helpers that shape model outputs into wire responses (shared by routes and compose).

Routes that answer with float vectors render them straight from numpy with orjson (``rendered``):
the dict a ``*_body`` builder returns has the field order and values of its pydantic response model
(which stays the documented ``response_model``), so no pydantic dump and no ``json`` encoder walks
the floats one by one (``JSONEncoder.iterencode`` was the gateway's top self-time entry, issue 24).
Vectors go as float64, so each number is the float the pydantic path wrote (exponents may be
spelled ``1e-5`` rather than ``1e-05``). Small answers render on the event loop; large ones in a
worker thread (``parsing.maybe_off_loop``)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np
import orjson
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from api import schemas as s
from deployments.gateway.parsing import maybe_off_loop
from deployments.info import EncoderInfo
from models.audio_features import frame_rate
from models.media import SAMPLE_RATE
from models.subtitles import to_srt, to_vtt

FLOAT_BYTES = 8  # what each float of an answer weighs for ``maybe_off_loop`` (about its JSON text)


async def rendered(build: Callable[..., object], *args, floats: int) -> Response:
    """Build a JSON body holding ``floats`` numbers (a dict with numpy arrays, or a response model)
    and serialise it: inline when small, else in a worker thread."""
    return await maybe_off_loop(floats * FLOAT_BYTES, lambda: json_response(build(*args)))


def json_response(content: object) -> Response:
    """``content`` as JSON, numpy arrays included. Like ``JSONResponse``, a NaN or infinity is an
    error (orjson would write ``null``); a pydantic model is dumped first."""
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json")
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    if b"null" in body and _non_finite(content):
        raise ValueError("Out of range float values are not JSON compliant")
    return Response(body, media_type="application/json")


def _non_finite(value: object) -> bool:
    """Whether a NaN or infinity hides in ``value`` (orjson writes them as ``null``)."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f" and not bool(np.isfinite(value).all())
    if isinstance(value, float):
        return not np.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def _vectors(rows: np.ndarray) -> np.ndarray:
    """Rows as float64 (C-contiguous, as orjson needs): each number prints as ``row.tolist()`` did."""
    return np.ascontiguousarray(rows, dtype=np.float64)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def top(scores: np.ndarray, k: int) -> list[s.Match]:
    order = np.argsort(-scores)[:k]
    return [s.Match(index=int(i), score=float(scores[i])) for i in order]


def embeddings(info: EncoderInfo, rows: np.ndarray) -> dict:
    """The body of an ``s.EmbeddingResponse``."""
    data = [{"index": i, "embedding": row} for i, row in enumerate(_vectors(rows))]
    return {"model": info.model, "space": info.space, "dim": int(rows.shape[1]), "data": data}


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


def openai_embeddings(model: str, rows: np.ndarray, fmt: str) -> dict:
    """The body of an ``s.OpenAIEmbeddingResponse``."""
    vectors = rows if fmt == "base64" else _vectors(rows)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": n, "embedding": encode(row, fmt)}
            for n, row in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


def encode(row: np.ndarray, fmt: str) -> np.ndarray | str:
    """OpenAI's base64 encoding is the little-endian float32 bytes of the vector."""
    if fmt == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row


def render_transcript(result: s.VerboseTranscriptionResponse, fmt: str) -> Response:
    if fmt == "text":
        return PlainTextResponse(result.text)
    if fmt == "srt":
        return PlainTextResponse(to_srt(result.segments), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(result.segments), media_type="text/vtt")
    return JSONResponse(result.json_body(fmt))
