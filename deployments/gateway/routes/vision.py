"""Vision routes: ImageNet classification, zero-shot labels and image-text retrieval."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from api import schemas as s
from deployments.gateway import deps, responses, routing
from deployments.gateway.calls import call

router = APIRouter()


@routing.post(
    router, "/v1/zero-shot", body=s.ZeroShotRequest, modality="image+text", response_model=s.ZeroShotResponse
)
async def zero_shot(enc: deps.Encoders, body=routing.body_of(s.ZeroShotRequest)):
    info, image, labels = await asyncio.gather(
        enc.shared_space(),
        enc.embed_media("image", body.image, "image"),
        enc.label_embeddings(body.labels, body.template),
    )
    return responses.zero_shot_response(info, image, labels, body.labels)


@routing.post(
    router, "/v1/classify", body=s.ClassifyRequest, modality="image", response_model=s.ClassifyResponse
)
async def classify(enc: deps.Encoders, body=routing.body_of(s.ClassifyRequest)):
    image = await enc.media.decode("image", body.image, "image")
    predictions, info = await asyncio.gather(
        call(enc.use("image").classify, image, body.top_k), enc.info("image")
    )
    return s.ClassifyResponse(model=info.task_model, predictions=predictions)


@routing.post(
    router,
    "/v1/retrieval",
    body=s.RetrievalRequest,
    modality="image+text",
    response_model=s.RetrievalResponse,
)
async def retrieval(enc: deps.Encoders, body=routing.body_of(s.RetrievalRequest)):
    info, images, texts = await asyncio.gather(
        enc.shared_space(), enc.embed_many("image", body.images, "images"), enc.embed_texts(body.texts)
    )
    sim = images @ texts.T
    return s.RetrievalResponse(
        model=info.model,
        similarity=sim.tolist(),
        image_to_text=[responses.top(row, body.top_k) for row in sim],
        text_to_image=[responses.top(col, body.top_k) for col in sim.T],
    )
