"""TextEncoder: sentence embeddings, one batch item per text, padded to the batch's longest."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.common import BatchStats, ModelReplica, checkpoint_path, log, placement, replica_device
from deployments.info import EncoderInfo
from deployments.metrics import observe_model_load
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
        observe_model_load("text")
        self.model.warmup()
        self.fusion_inputs = FeatureExtractor(text=self.model)
        self.fusion_inputs.text(["warm up the token path"])
        self.stats = BatchStats()

    def swap_model(self, spec: dict) -> None:
        """Load ``spec`` (e.g. a new adapter checkpoint) beside the running model, warm it, then swap."""
        new = TextModelSpec.model_validate(spec)
        if new == self.spec:
            return
        checkpoint_path(new.path if new.kind == "adapter" else None, "path")
        model = load_text(new, device=self.device)
        observe_model_load("text")
        model.warmup()
        fusion_inputs = FeatureExtractor(text=model)
        fusion_inputs.text(["warm up the token path"])
        self.spec, self.model, self.fusion_inputs = new, model, fusion_inputs
        log.info("TextEncoder now embeds with %s in space %s", model.model_id, model.space)

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
        return EncoderInfo(
            modality="text",
            model=m.model_id,
            space=m.space,
            dim=m.dim,
            token_dim=m.token_dim,
            device=self.device,
            quality=getattr(m, "quality", None),
            placement=placement(),
            batch=self.batch_config.model_dump(),
        )
