"""Embedding answers rendered straight from numpy (orjson) say what the pydantic models said, number
for number, in the same field order; small work stays on the event loop (issue 24 #2)."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from fastapi.responses import JSONResponse

from api import schemas as s
from deployments.gateway import parsing, responses
from deployments.info import EncoderInfo


def _info() -> EncoderInfo:
    return EncoderInfo(
        modality="image", model="clip-test", space="clip-test-space", dim=5, token_dim=5, device="cpu"
    )


def _rows(n: int = 3, dim: int = 5) -> np.ndarray:
    rng = np.random.default_rng(7)
    scale = 10.0 ** rng.integers(-9, 4, (n, dim))  # tiny and large magnitudes: exponent forms
    return (rng.standard_normal((n, dim)) * scale).astype(np.float32)


def _pydantic_body(model) -> dict:
    """What the gateway answered before (pydantic dump, Starlette's JSONResponse)."""
    return json.loads(JSONResponse(model.model_dump(mode="json")).body)


def _pairs(raw: bytes) -> list:
    """The body decoded keeping each object's field order."""
    return json.loads(raw, object_pairs_hook=list)


def test_embeddings_match_the_pydantic_answer_number_for_number():
    rows = _rows()
    old = s.EmbeddingResponse(
        model="clip-test",
        space="clip-test-space",
        dim=5,
        data=[s.Embedding(index=i, embedding=r.tolist()) for i, r in enumerate(rows)],
    )
    new = responses.json_response(responses.embeddings(_info(), rows)).body
    assert json.loads(new) == _pydantic_body(old)
    assert _pairs(new) == json.loads(JSONResponse(old.model_dump(mode="json")).body, object_pairs_hook=list)


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_openai_embeddings_match_in_both_encodings(fmt):
    rows = _rows()
    old = s.OpenAIEmbeddingResponse(
        model="m",
        data=[
            s.OpenAIEmbedding(
                index=n,
                embedding=(responses.encode(r, "base64") if fmt == "base64" else r.tolist()),
            )
            for n, r in enumerate(rows)
        ],
    )
    new = responses.json_response(responses.openai_embeddings("m", rows, fmt)).body
    assert _pairs(new) == json.loads(JSONResponse(old.model_dump(mode="json")).body, object_pairs_hook=list)


def test_a_non_finite_number_is_still_an_error():
    rows = _rows()
    rows[1, 2] = np.nan
    with pytest.raises(ValueError):
        responses.json_response(responses.embeddings(_info(), rows))


def test_small_work_stays_on_the_loop_and_large_work_leaves_it():
    loop_thread = threading.get_ident()

    async def where(size: int) -> bool:
        return await parsing.maybe_off_loop(size, lambda: threading.get_ident() == loop_thread)

    assert asyncio.run(where(parsing.INLINE_BYTES)) is True
    assert asyncio.run(where(parsing.INLINE_BYTES + 1)) is False
