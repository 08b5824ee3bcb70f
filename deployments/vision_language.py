"""VisionLanguage: image captioning and visual question answering, several models per replica.

Requests name a model through ``multiplexed_model_id`` (the model's config id); Serve routes them to
a replica that already holds it when it can, and each replica keeps an LRU of at most ``max_models``
loaded models. Each request's generation settings and text are checked here, before it joins a
``@serve.batch``, so one bad request never fails the others; a batch then runs one ``generate`` per
(model, settings) group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import numpy as np
import ray
import torch
from ray import serve

from deployments.common import BatchStats, ModelReplica, placement, replica_device
from deployments.metrics import observe_model_load
from models.errors import NotFound, Unavailable
from models.registry import VisionLanguageModelSpec, load_vision_language
from models.vision_language import GenerationSettings, VisionLanguageModel

log = logging.getLogger("ray.serve")


def replica_threads() -> int:
    """Torch threads for this replica: its CPU share, at least one (tiny models run fastest on one)."""
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


@serve.deployment(name="VisionLanguage")
class VisionLanguage(ModelReplica):
    _batched = ("_generate_batch",)

    def __init__(self, models: list[dict], max_models: int = 2) -> None:
        self.specs = {spec.id: spec for spec in map(VisionLanguageModelSpec.model_validate, models)}
        self.device = replica_device()
        torch.set_num_threads(replica_threads())
        self.stats = BatchStats()

        async def load(model_id: str) -> VisionLanguageModel:
            return await asyncio.to_thread(self._load, model_id)

        # Wired at init so the LRU size comes from the config (Serve detects it on the instance).
        self.get_model = serve.multiplexed(max_num_models_per_replica=max_models)(load)

    def _load(self, model_id: str) -> VisionLanguageModel:
        spec = self.specs.get(model_id)
        if spec is None:
            raise NotFound(f"no vision-language model '{model_id}' here; see /v1/models", param="model")
        try:
            model = load_vision_language(spec, device=self.device)
            model.warmup()
        except Exception as exc:  # the config names weights this replica cannot load: the operator's fault
            log.exception("vision-language model %s failed to load from %s", model_id, spec.path)
            observe_model_load("vision_language", failed=True)
            raise Unavailable(
                f"vision-language model '{model_id}' could not be loaded ({type(exc).__name__}); "
                "see the VisionLanguage replica's log"
            ) from None
        observe_model_load("vision_language")
        log.info(
            "loaded vision-language model %s (%s %s) on %s", model_id, spec.task, spec.engine, self.device
        )
        return model

    def models(self) -> list[dict]:
        """The configured models (loaded or not): what /v1/models lists and routes pick from."""
        return [
            {"id": s.id, "task": s.task, "engine": s.engine, "device": self.device}
            for s in self.specs.values()
        ]

    async def run(self, image: np.ndarray, text: str | None, options: dict) -> dict:
        """Caption ``image`` (``text``: the prompt it starts with) or answer ``text`` about it, with the
        model this request is routed for. ``options``: max_tokens, num_beams, top_k (None: defaults);
        with ``clamp``, a max_tokens over the model's limit is lowered to it (OpenAI's is an upper bound)."""
        model = await self.get_model(serve.get_multiplexed_model_id())
        options = dict(options)
        if options.pop("clamp", False) and options.get("max_tokens") is not None:
            options["max_tokens"] = min(options["max_tokens"], model.max_new_tokens)
        settings = model.settings(**options)  # here, so a bad request never fails a whole batch
        model.check_text(text)
        out = await self._generate_batch(model, image, text, settings)
        return {
            **dataclasses.asdict(out),
            "model": model.model_id,
            "task": model.task,
            "max_tokens": settings.max_tokens,
        }

    @serve.batch
    async def _generate_batch(self, models: list, images: list, texts: list, settings: list) -> list:
        """One generate call per (model, settings) group of the batch."""
        groups: dict[tuple[int, GenerationSettings], list[int]] = {}
        for n, (model, setting) in enumerate(zip(models, settings)):
            groups.setdefault((id(model), setting), []).append(n)
        out: list = [None] * len(images)
        for (_, setting), indices in groups.items():
            model = models[indices[0]]

            def forward(items: list, model=model, setting=setting) -> list:
                return model.generate([model.preprocess(image, text) for image, text in items], setting)

            done = await self._run_batch("generate", forward, [(images[i], texts[i]) for i in indices])
            for i, result in zip(indices, done):
                out[i] = result
        return out

    def info(self) -> dict:
        return {
            "models": self.models(),
            "device": self.device,
            "placement": placement(),
            "batch": self.batch_config.model_dump(),
            "threads": torch.get_num_threads(),
        }
