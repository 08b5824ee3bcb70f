"""Vision routes: ImageNet classification, zero-shot labels and image-text retrieval."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from api import schemas as s
from deployments.gateway import deps, responses, routing

router = APIRouter()


@routing.post(
    router,
    "/v1/zero-shot",
    body=s.ZeroShotRequest,
    modality="image+text",
    raw="image",
    response_model=s.ZeroShotResponse,
)
async def zero_shot(
    vision: deps.VisionDep, tenant: deps.CurrentTenant, body=routing.body_of(s.ZeroShotRequest)
):
    return await vision.zero_shot(tenant, body.image, body.labels, body.template, param="image")


@routing.post(
    router,
    "/v1/classify",
    body=s.ClassifyRequest,
    modality="image",
    raw="image",
    response_model=s.ClassifyResponse,
)
async def classify(
    vision: deps.VisionDep, tenant: deps.CurrentTenant, body=routing.body_of(s.ClassifyRequest)
):
    return await vision.classify(tenant, await vision.decode(tenant, body.image, "image"), body.top_k)


@routing.post(
    router,
    "/v1/retrieval",
    body=s.RetrievalRequest,
    modality="image+text",
    response_model=s.RetrievalResponse,
)
async def retrieval(
    enc: deps.EncodersDep, tenant: deps.CurrentTenant, body=routing.body_of(s.RetrievalRequest)
):
    info, images, texts = await asyncio.gather(
        enc.shared_space(),
        enc.embed_many(tenant, "image", body.images, "images"),
        enc.embed_texts(tenant, body.texts),
    )
    sim = images @ texts.T
    return s.RetrievalResponse(
        model=info.model,
        similarity=sim.tolist(),
        image_to_text=[responses.top(row, body.top_k) for row in sim],
        text_to_image=[responses.top(col, body.top_k) for col in sim.T],
    )
