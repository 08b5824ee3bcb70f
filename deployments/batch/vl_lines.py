"""Captions and VQA lines of a batch on the configured vision-language models (``vision_language.models``,
loaded with the production loader on first use), read and answered as the online routes do
(``deployments.vl_requests``), generated in groups that share a model and settings as the
VisionLanguage deployment batches them. Ray-free."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from api import schemas as s
from deployments import vl_requests
from models.errors import MMServeError, Unavailable
from models.media import MediaLimits, decode_image

TASKS = {"/v1/captions": "caption", "/v1/vqa": "vqa"}


@dataclasses.dataclass(frozen=True)
class _Job:
    """One line, ready: its model, settings and (image, text) pairs; ``asked`` for VQA."""

    model_id: str
    settings: Any
    pairs: list[tuple[np.ndarray, str | None]]
    asked: list[str] | None


class VLLines:
    def __init__(self, specs: Sequence[dict], limits: MediaLimits, *, device: str = "cpu") -> None:
        from models.registry import VisionLanguageModelSpec

        self.specs = {spec.id: spec for spec in map(VisionLanguageModelSpec.model_validate, specs)}
        self.limits, self.device = limits, device
        self.loaded: dict[str, Any] = {}  # id -> model, or the Unavailable its load gave

    def model(self, model_id: str):
        if model_id not in self.loaded:
            from models.registry import load_vision_language

            try:
                self.loaded[model_id] = load_vision_language(self.specs[model_id], device=self.device)
            except Exception as exc:  # the config names weights this worker cannot load
                self.loaded[model_id] = Unavailable(
                    f"vision-language model '{model_id}' could not be loaded ({type(exc).__name__})"
                )
        found = self.loaded[model_id]
        if isinstance(found, MMServeError):
            raise found
        return found

    def _job(self, endpoint: str, body: Any) -> _Job:
        task = TASKS[endpoint]
        model_id = vl_requests.choose([(i, spec.task) for i, spec in self.specs.items()], body.model, task)
        asked = None
        if task == "caption":
            places = vl_requests.images(body)
            pairs = [(decode_image(raw, limits=self.limits, param=p), body.prompt) for raw, p in places]
            options = {"max_tokens": body.max_tokens, "num_beams": body.num_beams}
        else:
            asked = vl_requests.questions(body)
            image = decode_image(body.image, limits=self.limits, param="image")
            pairs = [(image, q) for q in asked]
            options = {"max_tokens": body.max_tokens, "num_beams": body.num_beams, "top_k": body.top_k}
        model = self.model(model_id)
        settings = model.settings(**options)
        for _, text in pairs:
            model.check_text(text)
        return _Job(model_id, settings, pairs, asked)

    def answer(self, endpoint: str, bodies: Sequence[Any]) -> list[dict | MMServeError]:
        """Each line's response body (as the online route answers), or the error it fails with."""
        jobs: list[_Job | MMServeError] = []
        for body in bodies:
            try:
                jobs.append(self._job(endpoint, body))
            except MMServeError as exc:
                jobs.append(exc)
        groups: dict[tuple[str, Any], list[tuple[int, int]]] = {}
        for j, job in enumerate(jobs):
            if isinstance(job, _Job):
                for k in range(len(job.pairs)):
                    groups.setdefault((job.model_id, job.settings), []).append((j, k))
        outputs: dict[tuple[int, int], dict] = {}
        for (model_id, settings), where in groups.items():
            model = self.loaded[model_id]
            items = [model.preprocess(*jobs[j].pairs[k]) for j, k in where]  # type: ignore[union-attr]
            for at, out in zip(where, model.generate(items, settings)):
                outputs[at] = dataclasses.asdict(out)
        return [
            _render(job, [outputs[(j, k)] for k in range(len(job.pairs))]) if isinstance(job, _Job) else job
            for j, job in enumerate(jobs)
        ]


def _render(job: _Job, outputs: list[dict]) -> dict:
    response: s.CaptionResponse | s.VQAResponse
    if job.asked is None:
        response = vl_requests.captions(job.model_id, outputs)
    else:
        response = vl_requests.answers(job.model_id, job.asked, outputs)
    return response.model_dump()
