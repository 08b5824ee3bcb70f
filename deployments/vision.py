"""VisionEncoder: image embeddings and ImageNet-style classification, batched."""

from __future__ import annotations

import asyncio

import numpy as np
import torch
from ray import serve

from deployments.common import BatchStats, ModelReplica, checkpoint_path, log, placement, replica_device
from deployments.info import EncoderInfo
from deployments.metrics import observe_model_load, timed_decode
from models.fusion_features import FeatureExtractor, ModalityFeatures
from models.image_input import Cropped, Encoded
from models.registry import TextModelSpec, VisionModelSpec, load_classifier, load_embedder

BLANK = np.zeros((224, 224, 3), dtype=np.uint8)
DECODES = 2  # uploads decoded at once in a replica (image_transport: bytes); each up to max_image_pixels


@serve.deployment(name="VisionEncoder")
class VisionEncoder(ModelReplica):
    _required = ("classifier", "embedder")
    _batched = ("_classify_batch", "_embed_batch")

    def __init__(self, spec: dict, text_spec: dict) -> None:
        self.spec = VisionModelSpec.model_validate(spec)
        self.text_spec = TextModelSpec.model_validate(text_spec)
        self.device = replica_device()
        self.classifier = load_classifier(self.spec, device=self.device)
        self.embedder = load_embedder(
            self.spec, self.text_spec, classifier=self.classifier, device=self.device
        )
        observe_model_load("vision")
        self.stats = BatchStats()
        self._decodes = asyncio.Semaphore(DECODES)
        self.fusion_inputs = FeatureExtractor(image=self.embedder)
        self._probs([BLANK])
        self._warm(self.embedder, self.fusion_inputs)

    @staticmethod
    def _warm(embedder, fusion_inputs: FeatureExtractor) -> None:
        """Run the embedding path and build the feature-map network now, not on a request."""
        embedder.embed(torch.stack([embedder.preprocess(BLANK)]))
        fusion_inputs.image([BLANK])

    def swap_model(self, spec: dict) -> None:
        """Load ``spec`` (e.g. a new adapter checkpoint) beside the running model, warm it, then swap;
        requests in flight finish on the old one. The classifier is reused when its spec is unchanged."""
        new = VisionModelSpec.model_validate(spec)
        if new == self.spec:
            return
        checkpoint_path(new.embedder_path if new.embedder == "adapter" else None, "embedder_path")
        same_classifier = all(
            getattr(new, f) == getattr(self.spec, f)
            for f in ("classifier", "classifier_path", "precision", "torchscript", "runtime")
        )
        classifier = self.classifier if same_classifier else load_classifier(new, device=self.device)
        embedder = load_embedder(new, self.text_spec, classifier=classifier, device=self.device)
        observe_model_load("vision")
        fusion_inputs = FeatureExtractor(image=embedder)
        self._warm(embedder, fusion_inputs)
        self.spec, self.classifier, self.embedder, self.fusion_inputs = (
            new,
            classifier,
            embedder,
            fusion_inputs,
        )
        log.info("VisionEncoder now embeds with %s in space %s", embedder.model_id, embedder.space)

    def _probs(self, images: list[np.ndarray]) -> np.ndarray:
        classifier = self.classifier
        return classifier.probs(torch.stack([classifier.preprocess(i) for i in images]))

    def _embed(self, images: list[np.ndarray]) -> np.ndarray:
        embedder = self.embedder
        return embedder.embed(torch.stack([embedder.preprocess(i) for i in images]))

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

    async def embed(self, image: np.ndarray | Cropped | Encoded) -> np.ndarray:
        """One image's embedding. An upload sent as bytes (``image_transport: bytes``) is decoded here,
        off the event loop and before batching, so a corrupt one fails alone (400, as in the gateway),
        and at most ``DECODES`` at a time, so a burst of large uploads cannot hold many full-size
        images in memory at once."""
        size = getattr(self.embedder, "input_size", None)
        if isinstance(image, Encoded):
            async with self._decodes:
                image = await asyncio.to_thread(timed_decode(image.decode), size)
        elif isinstance(image, Cropped) and (
            size is None or image.pixels.shape[:2] != (size.crop, size.crop)
        ):
            image = image.pixels  # cropped for a model swapped out since (the gateway's info lags): resize it
        return await self._embed_batch(image)

    async def fusion_features(self, image: np.ndarray) -> ModalityFeatures:
        """Pooled embedding and token-level features (feature map cells or patches) for fusion heads."""
        return (await asyncio.to_thread(self.fusion_inputs.image, [image]))[0]

    def info(self) -> EncoderInfo:
        e = self.embedder
        return EncoderInfo(
            modality="image",
            model=e.model_id,
            space=e.space,
            dim=e.dim,
            token_dim=e.token_dim,
            device=self.device,
            logit_scale=e.logit_scale,
            task_model=self.classifier.model_id,
            input_size=getattr(e, "input_size", None),
            quality=getattr(e, "quality", None),
            placement=placement(),
            batch=self.batch_config.model_dump(),
        )
