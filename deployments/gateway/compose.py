"""The compose tasks, declared once: ``TASKS`` says how each task type is planned into the DAG and
how its result is shaped; ``RUNNERS`` says how each node operation runs against the deployments.

Adding a task type is one ``TASKS`` entry (its planner and result) and, when it needs a new
operation, one runner registered with ``@runner("op")``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from api import schemas as s
from deployments.gateway import planner as p
from deployments.gateway import responses
from deployments.gateway.calls import call
from deployments.gateway.services import Services, index_name
from models.errors import InvalidInput


@dataclass(frozen=True)
class Context:
    """What the runners of one composed request work with."""

    services: Services
    inputs: s.ComposeInputs


Runner = Callable[[Context, p.Node, tuple], Awaitable[Any]]
RUNNERS: dict[str, Runner] = {}


def runner(*ops: str):
    def register(fn: Runner) -> Runner:
        for op in ops:
            RUNNERS[op] = fn
        return fn

    return register


async def run_node(ctx: Context, node: p.Node, args: tuple) -> Any:
    return await RUNNERS[node.op](ctx, node, args)


# ---- runners ---------------------------------------------------------------------------------
@runner("decode_image", "decode_audio")
async def _decode(ctx: Context, node: p.Node, args: tuple):
    m = node.params["modality"]
    return await ctx.services.media.decode(m, getattr(ctx.inputs, m), f"inputs.{m}")


@runner("embed_image", "embed_audio")
async def _embed_media(ctx: Context, node: p.Node, args: tuple):
    m = node.params["modality"]
    return await ctx.services.encoders.embed_media(m, getattr(ctx.inputs, m), f"inputs.{m}", decoded=args[0])


@runner("embed_text")
async def _embed_text(ctx: Context, node: p.Node, args: tuple):
    return (await ctx.services.encoders.embed_texts([ctx.inputs.text]))[0]


@runner("embed_labels")
async def _embed_labels(ctx: Context, node: p.Node, args: tuple):
    return await ctx.services.encoders.label_embeddings(node.params["labels"], node.params["template"])


@runner("zero_shot")
async def _zero_shot(ctx: Context, node: p.Node, args: tuple):
    image, labels = args
    info = await ctx.services.encoders.shared_space()
    return responses.zero_shot_response(info, image, labels, node.params["labels"])


@runner("classify")
async def _classify(ctx: Context, node: p.Node, args: tuple):
    enc = ctx.services.encoders
    predictions, info = await asyncio.gather(
        call(enc.use("image").classify, args[0], node.params["top_k"]), enc.info("image")
    )
    return s.ClassifyResponse(model=info.task_model, predictions=predictions)


@runner("speech")
async def _speech(ctx: Context, node: p.Node, args: tuple):
    q = node.params
    options = {
        "task": q["task"],
        "language": q.get("language"),
        "prompt": q.get("prompt"),
        "temperature": q.get("temperature", 0.0),
    }
    return await call(ctx.services.encoders.use("audio").transcribe, args[0], options)


@runner("features")
async def _features(ctx: Context, node: p.Node, args: tuple):
    audio = args[0]
    feats = await call(
        ctx.services.encoders.use("audio").features, audio, list(dict.fromkeys(node.params["features"]))
    )
    return responses.features_response(audio, feats)


@runner("embed_transcript")
async def _embed_transcript(ctx: Context, node: p.Node, args: tuple):
    text = args[0]["text"]
    return await ctx.services.encoders.embed_transcript(text, param="inputs.audio"), text


@runner("search")
async def _search(ctx: Context, node: p.Node, args: tuple):
    q, search = node.params, ctx.services.search
    vector, transcript = args[0] if q["query"] == "audio" else (args[0], None)
    space = await search.encoders.query_space(q["query"])
    hits = await search.search(
        index_name(q["index"]), vector, space=space, top_k=q["top_k"], where=q["where"]
    )
    return s.QueryResponse(index=q["index"], query=q["query"], transcript=transcript, hits=hits)


@runner("fusion_features_image", "fusion_features_text", "fusion_features_audio")
async def _fusion_features(ctx: Context, node: p.Node, args: tuple):
    m = node.params["modality"]
    value = ctx.inputs.text if m == "text" else args[0]
    return await call(ctx.services.encoders.use(m).fusion_features, value)


@runner("fuse")
async def _fuse(ctx: Context, node: p.Node, args: tuple):
    fusion, head = ctx.services.fusion, node.params["head"]
    row = {dep.removeprefix("fusion_features:"): value for dep, value in zip(node.deps, args)}
    out = (await call(fusion.head(head).predict, [row], await fusion.running_encoders()))[0]
    return s.FusionResult(
        head=head, label=out["label"], scores=out["scores"], used=sorted(row), missing=sorted(out["missing"])
    )


@runner("caption", "vqa")
async def _vision_language(ctx: Context, node: p.Node, args: tuple):
    """A caption or an answer about the image decoded once for every task of the request."""
    q, vl = node.params, ctx.services.vision_language
    model = await vl.pick(q.get("model"), node.op)
    text = q.get("prompt") if node.op == "caption" else q["question"]
    out = await vl.run(
        model,
        args[0],
        text,
        max_tokens=q.get("max_tokens"),
        num_beams=q.get("num_beams"),
        top_k=q.get("top_k"),
    )
    if node.op == "caption":
        return s.CaptionResult(model=model.id, caption=out["text"], tokens=out["tokens"])
    return s.VQAResult(
        model=model.id,
        question=text,
        answer=out["text"],
        answers=[s.ScoredAnswer(**a) for a in out["answers"]],
    )


# ---- task types ------------------------------------------------------------------------------
Shape = Callable[[Context, dict, Any], Awaitable[s.ComposeResult]]


async def _as_is(ctx: Context, task: dict, value: Any) -> s.ComposeResult:
    return value


async def _embedding(ctx: Context, task: dict, row: Any) -> s.ComposeResult:
    return responses.embedding_result(await ctx.services.encoders.info(task["modality"]), row)


async def _transcript(ctx: Context, task: dict, value: Any) -> s.ComposeResult:
    return s.VerboseTranscriptionResponse.model_validate(value)


async def _language(ctx: Context, task: dict, value: Any) -> s.ComposeResult:
    return s.LanguageResult(language=value["language"], language_probability=value["language_probability"])


@dataclass(frozen=True)
class TaskType:
    plan: p.TaskPlanner  # adds the task's nodes; returns the node holding its result
    shape: Shape = _as_is  # that node's value as the task's typed result


def _plan_embed(plan: p.Plan, task: dict, present: set[str]) -> str:
    p.require(present, task["modality"], task["id"])
    return p.embedding(plan, task["modality"])


def _plan_classify(plan: p.Plan, task: dict, present: set[str]) -> str:
    p.require(present, "image", task["id"])
    return p.own(plan, task, "classify", p.decoded(plan, "image"))


def _plan_zero_shot(plan: p.Plan, task: dict, present: set[str]) -> str:
    """The label prompts are embedded beside the image, not after it."""
    p.require(present, "image", task["id"])
    labels = plan.add(p.Node(f"labels:{task['id']}", "embed_labels", (), task))
    return p.own(plan, task, "zero_shot", (p.embedding(plan, "image"), labels))


def _plan_speech(plan: p.Plan, task: dict, present: set[str]) -> str:
    p.require(present, "audio", task["id"])
    return p.speech(plan, task["type"], task)


def _plan_language(plan: p.Plan, task: dict, present: set[str]) -> str:
    """The language Whisper detects in its transcription pass (shared with transcribe and spoken search)."""
    return _plan_speech(plan, {**task, "type": "transcribe"}, present)


def _plan_features(plan: p.Plan, task: dict, present: set[str]) -> str:
    p.require(present, "audio", task["id"])
    return p.own(plan, task, "features", p.decoded(plan, "audio"))


def _plan_search(plan: p.Plan, task: dict, present: set[str]) -> str:
    by = task["query"]
    p.require(present, by, task["id"])
    query = p.transcript_embedding(plan) if by == "audio" else p.embedding(plan, by)
    return p.own(plan, task, "search", (query,))


def _plan_vision_language(plan: p.Plan, task: dict, present: set[str]) -> str:
    """Captions and answers take the image the other tasks decode."""
    p.require(present, "image", task["id"])
    return p.own(plan, task, task["type"], p.decoded(plan, "image"))


def _plan_fuse(plan: p.Plan, task: dict, present: set[str]) -> str:
    """Fusion waits for the fusion features of every modality present that the head knows; absent
    ones are masked by the head."""
    usable = [m for m in task["modalities"] if m in present]
    if not usable:
        raise InvalidInput(
            f"head '{task['head']}' takes {', '.join(task['modalities'])}; the request carries none of them",
            param="inputs",
        )
    return p.own(plan, task, "fuse", tuple(p.fusion_features(plan, m) for m in usable))


TASKS: dict[str, TaskType] = {
    "embed": TaskType(_plan_embed, _embedding),
    "classify": TaskType(_plan_classify),
    "zero_shot": TaskType(_plan_zero_shot),
    "transcribe": TaskType(_plan_speech, _transcript),
    "translate": TaskType(_plan_speech, _transcript),
    "language": TaskType(_plan_language, _language),
    "features": TaskType(_plan_features),
    "search": TaskType(_plan_search),
    "fuse": TaskType(_plan_fuse),
    "caption": TaskType(_plan_vision_language),
    "vqa": TaskType(_plan_vision_language),
}
PLANNERS = {name: task.plan for name, task in TASKS.items()}
