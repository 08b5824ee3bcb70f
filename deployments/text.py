"""TextEncoder: sentence embeddings, one batch item per text, padded to the batch's longest."""
from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.info import EncoderInfo
from deployments.common import BatchStats, ModelReplica, placement, replica_device
from models.fusion_features import FeatureExtractor, ModalityFeatures
from models.registry import TextModelSpec, load_text


@serve.deployment(name="TextEncoder")
class TextEncoder(ModelReplica):
    _required = ("model",)
    _batched = ("_embed_batch",)

    def __init__(self, spec: dict) -> None:
        self.spec = TextModelSpec.model_validate(spec)
        self.device = replica_device()
        self.model = load_text(self.spec, device=self.device)
        self.model.warmup()
        self.fusion_inputs = FeatureExtractor(text=self.model)
        self.fusion_inputs.text(["warm up the token path"])
        self.stats = BatchStats()

    @serve.batch
    async def _embed_batch(self, texts: list[str]) -> list[np.ndarray]:
        return await self._run_batch("embed", self.model.embed, texts)

    async def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack(await asyncio.gather(*(self._embed_batch(t) for t in texts)))

    async def fusion_features(self, text: str) -> ModalityFeatures:
        """Pooled embedding and token-level states, the inputs of a fusion head."""
        return (await asyncio.to_thread(self.fusion_inputs.text, [text]))[0]

    def info(self) -> EncoderInfo:
        m = self.model
        return EncoderInfo(modality="text", model=m.model_id, space=m.space, dim=m.dim, token_dim=m.token_dim,
                           device=self.device, placement=placement(), batch=self.batch_config.model_dump())
