"""Captions and VQA requests, read and answered the same way online (the gateway's routes) and in a
batch (``deployments/batch/work``): which images and questions a body holds, which configured model it
names, and the response built from the model's outputs (``models.vision_language.VLOutput`` as dicts).
Ray-free."""

from __future__ import annotations

from collections.abc import Sequence

from api import schemas as s
from models.errors import Incompatible, InvalidInput, NotFound


def images(body: s.CaptionRequest) -> list[tuple[bytes, str]]:
    """Each image of the request with its param."""
    if (body.image is None) == (body.images is None):
        raise InvalidInput("give one of 'image' or 'images'", param="image")
    if body.image is not None:
        return [(body.image, "image")]
    return [(raw, f"images[{n}]") for n, raw in enumerate(body.images or [])]


def questions(body: s.VQARequest) -> list[str]:
    if (body.question is None) == (body.questions is None):
        raise InvalidInput("give one of 'question' or 'questions'", param="question")
    return [body.question] if body.question is not None else list(body.questions or [])


def choose(known: Sequence[tuple[str, str]], model: str | None, task: str | None) -> str:
    """The id of the model a request names among ``known`` (id, task) pairs (it must do ``task`` when
    given), or of the first that does ``task``."""
    if model is None:
        found = next((m for m, t in known if t == task), None)
        if found is None:
            raise NotFound(f"no {task} model is configured (vision_language.models)", param="model")
        return found
    tasks = dict(known)
    if model not in tasks:
        ids = ", ".join(m for m, _ in known)
        raise NotFound(f"model '{model}' is not a vision-language model here; known: {ids}", param="model")
    if task is not None and tasks[model] != task:
        raise Incompatible(f"model '{model}' does {tasks[model]}, not {task}", param="model")
    return model


def usage(outputs: list[dict]) -> s.TokenUsage:
    prompt, completion = sum(o["prompt_tokens"] for o in outputs), sum(o["tokens"] for o in outputs)
    return s.TokenUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def captions(model_id: str, outputs: list[dict]) -> s.CaptionResponse:
    data = [s.Caption(index=n, caption=o["text"], tokens=o["tokens"]) for n, o in enumerate(outputs)]
    return s.CaptionResponse(model=model_id, data=data, usage=usage(outputs))


def answers(model_id: str, asked: list[str], outputs: list[dict]) -> s.VQAResponse:
    data = [
        s.VQAAnswer(
            index=n,
            question=q,
            answer=o["text"],
            tokens=o["tokens"],
            answers=[s.ScoredAnswer(**a) for a in o["answers"]],
        )
        for n, (q, o) in enumerate(zip(asked, outputs))
    ]
    return s.VQAResponse(model=model_id, data=data, usage=usage(outputs))
