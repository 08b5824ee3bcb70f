"""The gateway's service for the VisionLanguage deployment: which models it serves, the one a
request names, and captions or answers routed to a replica holding that model (multiplexing)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ray.serve.handle import DeploymentHandle

from api import schemas as s
from config.tenants import Tenant
from deployments import vl_requests
from deployments.gateway.calls import call
from deployments.gateway.services.media import MediaDecoder
from models.errors import Unavailable

VL_SWITCH = "vision_language.enabled"


def switched_off() -> Unavailable:
    """What every captions, VQA and vision chat request answers when the deployment is off (503)."""
    return Unavailable(
        f"captioning and visual question answering are off in this deployment: set "
        f"{VL_SWITCH}: true and list vision_language.models in the app's args "
        f"(no vision-language weights are packaged for offline use)"
    )


@dataclass(frozen=True)
class VLModel:
    """A captioning or VQA model the VisionLanguage deployment serves."""

    id: str
    task: str  # "caption" or "vqa"
    engine: str
    device: str


class VisionLanguageClient:
    """The gateway's side of the VisionLanguage deployment: captions and answers, routed
    (multiplexed) by model id."""

    def __init__(self, handle: DeploymentHandle | None, media: MediaDecoder) -> None:
        self.handle, self.media = handle, media
        self._models: list[VLModel] | None = None

    @property
    def enabled(self) -> bool:
        return self.handle is not None

    def deployment(self) -> DeploymentHandle:
        if self.handle is None:
            raise switched_off()
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
        chosen = vl_requests.choose([(m.id, m.task) for m in known], model, task)
        return next(m for m in known if m.id == chosen)

    async def image(self, tenant: Tenant, raw: bytes, param: str) -> np.ndarray:
        return await self.media.decode(tenant, "image", raw, param)

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

    async def caption(self, task: s.CaptionTask, image: np.ndarray) -> s.CaptionResult:
        """A compose ``caption`` task on the image its request decoded once."""
        model = await self.pick(task.model, "caption")
        out = await self.run(model, image, task.prompt, max_tokens=task.max_tokens, num_beams=task.num_beams)
        return s.CaptionResult(model=model.id, caption=out["text"], tokens=out["tokens"])

    async def answer(self, task: s.VQATask, image: np.ndarray) -> s.VQAResult:
        """A compose ``vqa`` task on the image its request decoded once."""
        model = await self.pick(task.model, "vqa")
        out = await self.run(
            model,
            image,
            task.question,
            max_tokens=task.max_tokens,
            num_beams=task.num_beams,
            top_k=task.top_k,
        )
        answers = [s.ScoredAnswer(**a) for a in out["answers"]]
        return s.VQAResult(model=model.id, question=task.question, answer=out["text"], answers=answers)
