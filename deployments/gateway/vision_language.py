"""The gateway's service for the VisionLanguage deployment: which models it serves, the one a
request names, and captions or answers routed to a replica holding that model (multiplexing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from ray.serve.handle import DeploymentHandle

from deployments.gateway.calls import call
from models.errors import Incompatible, NotFound, Unavailable


class Media(Protocol):
    """What this service needs of ``services.Media`` (which holds this service: an import of it would
    be a circle): decoding an untrusted image within the limits."""

    async def decode(self, modality: str, raw: bytes, param: str) -> np.ndarray: ...


VL_SWITCH = "vision_language.enabled"


@dataclass(frozen=True)
class VLModel:
    """A captioning or VQA model the VisionLanguage deployment serves."""

    id: str
    task: str  # "caption" or "vqa"
    engine: str
    device: str


class VisionLanguage:
    """The VisionLanguage deployment: captions and answers, routed (multiplexed) by model id."""

    def __init__(self, handle: DeploymentHandle | None, media: Media) -> None:
        self.handle, self.media = handle, media
        self._models: list[VLModel] | None = None

    @property
    def enabled(self) -> bool:
        return self.handle is not None

    def deployment(self) -> DeploymentHandle:
        if self.handle is None:
            raise Unavailable(
                f"captioning and visual question answering are off in this deployment: set "
                f"{VL_SWITCH}: true and list vision_language.models in the app's args "
                f"(no vision-language weights are packaged for offline use)"
            )
        return self.handle

    async def models(self) -> list[VLModel]:
        """The configured models; empty when the deployment is off."""
        if self.handle is None:
            return []
        if self._models is None:
            self._models = [VLModel(**m) for m in await call(self.handle.models)]
        return self._models

    async def pick(self, model: str | None, task: str | None) -> VLModel:
        """The model a request names (it must do ``task`` when given), or the first that does ``task``."""
        self.deployment()
        known = await self.models()
        if model is None:
            found = next((m for m in known if m.task == task), None)
            if found is None:
                raise NotFound(f"no {task} model is configured (vision_language.models)", param="model")
            return found
        found = next((m for m in known if m.id == model), None)
        if found is None:
            ids = ", ".join(m.id for m in known)
            raise NotFound(
                f"model '{model}' is not a vision-language model here; known: {ids}", param="model"
            )
        if task is not None and found.task != task:
            raise Incompatible(f"model '{model}' does {found.task}, not {task}", param="model")
        return found

    async def image(self, raw: bytes, param: str) -> np.ndarray:
        return await self.media.decode("image", raw, param)

    async def run(
        self,
        model: VLModel,
        image: np.ndarray,
        text: str | None,
        *,
        max_tokens: int | None = None,
        num_beams: int | None = None,
        top_k: int | None = None,
        clamp: bool = False,
    ) -> dict:
        """One caption or answer (the replica batches concurrent calls); ``clamp``: a max_tokens over
        the model's limit is lowered to it instead of refused."""
        options = {"max_tokens": max_tokens, "num_beams": num_beams, "top_k": top_k, "clamp": clamp}
        return await call(self.deployment().options(multiplexed_model_id=model.id).run, image, text, options)
