"""Embeddings: OpenAI's ``/v1/embeddings`` for every modality, and one route per modality."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from api import schemas as s
from deployments.gateway import deps, responses, routing
from deployments.gateway.errors import media_invalid
from models.errors import Incompatible, InvalidInput, NotFound

router = APIRouter()


def _media(value: str, param: str) -> bytes:
    try:
        return s.media_bytes(value)
    except s.MediaError as exc:
        raise media_invalid(param, exc) from None


def _texts(inputs: list[str]) -> list[str]:
    """Text inputs get the same cap as on every other route (the field also carries base64 media)."""
    for n, text in enumerate(inputs):
        if len(text) > s.MAX_TEXT_CHARS:
            raise InvalidInput(
                f"input[{n}] is {len(text)} characters; a text may have at most {s.MAX_TEXT_CHARS}",
                param=f"input[{n}]",
            )
    return inputs


@routing.post(
    router,
    "/v1/embeddings",
    body=s.OpenAIEmbeddingRequest,
    modality="any",
    multipart=False,
    response_model=s.OpenAIEmbeddingResponse,
)
async def openai_embeddings(
    enc: deps.EncodersDep, tenant: deps.CurrentTenant, body=routing.body_of(s.OpenAIEmbeddingRequest)
):
    """OpenAI-compatible embeddings for every modality; ``model`` (or ``modality``) picks it."""
    modality = (await enc.embedders()).get(body.model)
    if modality is None:
        raise NotFound(f"model '{body.model}' is not an embedding model here; see /v1/models", param="model")
    if body.modality not in (None, modality):
        raise Incompatible(f"model '{body.model}' embeds {modality}, not {body.modality}", param="modality")
    if modality == "text":
        rows = await enc.embed_texts(tenant, _texts(body.inputs()))
    else:
        raws = [_media(x, f"input[{n}]") for n, x in enumerate(body.inputs())]
        rows = await enc.embed_many(tenant, modality, raws, "input")
    if body.dimensions not in (None, rows.shape[1]):
        raise InvalidInput(
            f"'{body.model}' has {rows.shape[1]} dimensions, not {body.dimensions}", param="dimensions"
        )
    return await responses.rendered(
        responses.openai_embeddings, body.model, rows, body.encoding_format, floats=rows.size
    )


@routing.post(
    router,
    "/v1/embeddings/text",
    body=s.TextEmbedRequest,
    modality="text",
    response_model=s.EmbeddingResponse,
)
async def embed_text(
    enc: deps.EncodersDep, tenant: deps.CurrentTenant, body=routing.body_of(s.TextEmbedRequest)
):
    rows, info = await asyncio.gather(enc.embed_texts(tenant, body.texts), enc.info("text"))
    return await responses.rendered(responses.embeddings, info, rows, floats=rows.size)


@routing.post(
    router,
    "/v1/embeddings/image",
    body=s.ImageEmbedRequest,
    modality="image",
    raw="images",
    response_model=s.EmbeddingResponse,
)
async def embed_image(
    enc: deps.EncodersDep, tenant: deps.CurrentTenant, body=routing.body_of(s.ImageEmbedRequest)
):
    rows = await enc.embed_many(tenant, "image", body.images, "images")
    return await responses.rendered(responses.embeddings, await enc.info("image"), rows, floats=rows.size)


@routing.post(
    router,
    "/v1/embeddings/audio",
    body=s.AudioEmbedRequest,
    modality="audio",
    response_model=s.EmbeddingResponse,
)
async def embed_audio(
    enc: deps.EncodersDep, tenant: deps.CurrentTenant, body=routing.body_of(s.AudioEmbedRequest)
):
    rows = await enc.embed_many(tenant, "audio", body.audio, "audio")
    return await responses.rendered(responses.embeddings, await enc.info("audio"), rows, floats=rows.size)
