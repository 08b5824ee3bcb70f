"""Image classification and zero-shot labels, for the routes and the compose tasks alike."""

from __future__ import annotations

import asyncio

import numpy as np

from api import schemas as s
from config.tenants import Tenant
from deployments.gateway import responses
from deployments.gateway.calls import call
from deployments.gateway.services.encoders import Encoders


class Vision:
    """The VisionEncoder's classifier, and zero-shot labels over its image-text space."""

    def __init__(self, encoders: Encoders) -> None:
        self.encoders = encoders

    async def decode(self, tenant: Tenant, raw: bytes, param: str) -> np.ndarray:
        return await self.encoders.media.decode(tenant, "image", raw, param)

    async def classify(self, tenant: Tenant, image: np.ndarray, top_k: int) -> s.ClassifyResponse:
        """The ImageNet classes of a decoded image."""
        predictions, info = await asyncio.gather(
            call(self.encoders.use(tenant, "image").classify, image, top_k), self.encoders.info("image")
        )
        return s.ClassifyResponse(model=info.task_model, predictions=predictions)

    async def zero_shot(
        self, tenant: Tenant, raw: bytes, labels: list[str], template: str, *, param: str
    ) -> s.ZeroShotResponse:
        """Embed the image and the label prompts at once, then score the labels."""
        info, image, rows = await asyncio.gather(
            self.encoders.shared_space(),
            self.encoders.embed_media(tenant, "image", raw, param),
            self.encoders.label_embeddings(tenant, labels, template),
        )
        return responses.zero_shot_response(info, image, rows, labels)

    async def score_labels(
        self, image: np.ndarray, rows: np.ndarray, labels: list[str]
    ) -> s.ZeroShotResponse:
        """Zero-shot scores from an image embedding and label embeddings computed elsewhere."""
        return responses.zero_shot_response(await self.encoders.shared_space(), image, rows, labels)
