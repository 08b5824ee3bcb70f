"""VisionEncoder: image embeddings and ImageNet-style classification, batched."""
from __future__ import annotations

import asyncio

import numpy as np
import torch
from ray import serve

from deployments.info import EncoderInfo
from deployments.common import BatchStats, ModelReplica, placement, replica_device
from models.fusion_features import FeatureExtractor, ModalityFeatures
from models.registry import TextModelSpec, VisionModelSpec, load_classifier, load_embedder


@serve.deployment(name="VisionEncoder")
class VisionEncoder(ModelReplica):
    _required = ("classifier", "embedder")
    _batched = ("_classify_batch", "_embed_batch")

    def __init__(self, spec: dict, text_spec: dict) -> None:
        self.spec = VisionModelSpec.model_validate(spec)
        self.device = replica_device()
        self.classifier = load_classifier(self.spec, device=self.device)
        self.embedder = load_embedder(self.spec, TextModelSpec.model_validate(text_spec),
                                      classifier=self.classifier, device=self.device)
        self.stats = BatchStats()
        self.fusion_inputs = FeatureExtractor(image=self.embedder)
        blank = np.zeros((224, 224, 3), dtype=np.uint8)
        self._probs([blank]), self._embed([blank])  # warm up both paths
        self.fusion_inputs.image([blank])  # and build the feature-map network now, not on a request

    def _probs(self, images: list[np.ndarray]) -> np.ndarray:
        return self.classifier.probs(torch.stack([self.classifier.preprocess(i) for i in images]))

    def _embed(self, images: list[np.ndarray]) -> np.ndarray:
        return self.embedder.embed(torch.stack([self.embedder.preprocess(i) for i in images]))

    @serve.batch
    async def _classify_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return await self._run_batch("classify", self._probs, images)

    @serve.batch
    async def _embed_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return await self._run_batch("embed", self._embed, images)

    async def classify(self, image: np.ndarray, top_k: int) -> list[dict]:
        probs = await self._classify_batch(image)
        top = np.argsort(-probs)[:top_k]
        return [{"index": int(i), "label": self.classifier.labels[i], "score": float(probs[i])} for i in top]

    async def embed(self, image: np.ndarray) -> np.ndarray:
        return await self._embed_batch(image)

    async def fusion_features(self, image: np.ndarray) -> ModalityFeatures:
        """Pooled embedding and token-level features (feature map cells or patches) for fusion heads."""
        return (await asyncio.to_thread(self.fusion_inputs.image, [image]))[0]

    def info(self) -> EncoderInfo:
        e = self.embedder
        return EncoderInfo(modality="image", model=e.model_id, space=e.space, dim=e.dim, token_dim=e.token_dim,
                           device=self.device, logit_scale=e.logit_scale, task_model=self.classifier.model_id,
                           placement=placement(), batch=self.batch_config.model_dump())
