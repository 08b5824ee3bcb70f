"""The per-request planner: turns a composed request's typed tasks into a DAG of steps.

Each task expands into the nodes it needs (decode the image, embed it, classify it...): ``plan``
says, per task type, which. Nodes that several tasks share (one image embedding for ``embed``,
``zero_shot`` and ``search``; one Whisper pass for ``transcribe``, ``language`` and a spoken search)
are planned once. A task's own node carries the task; a speech node carries its ``Transcription``.
``execute`` starts every node as soon as its dependencies are done, so independent branches run
concurrently and dependent ones after; each node's step gets its dependencies' results in ``deps``
order. Ray-free: the gateway's ``ComposedRequest`` runs the steps against its services.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from api import schemas as s
from deployments import tracing
from deployments.gateway import call_times
from deployments.gateway.transcription import Transcription
from models.errors import InvalidInput


@dataclass(frozen=True)
class Node:
    id: str
    op: str
    deps: tuple[str, ...] = ()
    modality: str | None = None  # the input a shared node works on (decode, embed, fusion features)
    task: s.ComposeTask | Transcription | None = field(default=None, compare=False, hash=False)


@dataclass
class Plan:
    nodes: dict[str, Node] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # task id -> the node holding its result

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def edges(self) -> list[tuple[str, str]]:
        return [(dep, node.id) for node in self.nodes.values() for dep in node.deps]


@dataclass(frozen=True)
class Timing:
    started_ms: float
    latency_ms: float
    queue_ms: float | None = None  # the node's model calls, summed (call_times.py)
    replica_ms: float | None = None


@dataclass
class Execution:
    results: dict[str, Any]
    timings: dict[str, Timing]


# ---- shared nodes ---------------------------------------------------------------------------
def require(present: set[str], modality: str | None, task_id: str) -> None:
    if modality is not None and modality not in present:
        raise InvalidInput(
            f"task '{task_id}' needs the {modality} input, which the request does not carry",
            param=f"inputs.{modality}",
        )


def decoded(plan: Plan, modality: str) -> tuple[str, ...]:
    """Image and audio are decoded once in the gateway; text needs no decoding."""
    if modality == "text":
        return ()
    return (plan.add(Node(f"decode:{modality}", f"decode_{modality}", (), modality)),)


def embedding(plan: Plan, modality: str) -> str:
    return plan.add(Node(f"embed:{modality}", f"embed_{modality}", decoded(plan, modality), modality))


def speech(plan: Plan, options: Transcription, task_id: str) -> str:
    """One Whisper pass per distinct (task, language); prompted or sampled runs stay separate."""
    key = f"{options.task}:{options.language or 'auto'}" if options.shareable else f"{options.task}:{task_id}"
    return plan.add(Node(f"speech:{key}", "speech", decoded(plan, "audio"), task=options))


def transcript_embedding(plan: Plan) -> str:
    """Speech queries: transcribe (language detected), then embed the transcript as text."""
    spoken = speech(plan, Transcription(), "search")
    return plan.add(Node("embed:transcript", "embed_transcript", (spoken,)))


def fusion_features(plan: Plan, modality: str) -> str:
    node = Node(
        f"fusion_features:{modality}", f"fusion_features_{modality}", decoded(plan, modality), modality
    )
    return plan.add(node)


def own(plan: Plan, task: s.ComposeTask, op: str, deps: tuple[str, ...]) -> str:
    """The task's own node, named after the task, carrying it."""
    return plan.add(Node(f"{op}:{task.id}", op, deps, task=task))


def transcription(task: s.TranscribeTask | s.TranslateTask | s.LanguageTask) -> Transcription:
    """A speech task's Whisper options (``language`` reads the plain transcription pass)."""
    if isinstance(task, s.TranscribeTask):
        return Transcription("transcribe", task.language, task.prompt, task.temperature)
    if isinstance(task, s.TranslateTask):
        return Transcription("translate", None, task.prompt, task.temperature)
    return Transcription()


# ---- planning -------------------------------------------------------------------------------
Heads = Mapping[str, list[str]]  # fusion head -> the modalities it was trained on


def plan(tasks: Iterable[s.ComposeTask], present: set[str], heads: Heads | None = None) -> Plan:
    """The DAG for ``tasks`` (ids filled in) given the modalities present and the modalities of the
    fusion heads they name; each task's node holds its result. Identical tasks share it."""
    result, seen = Plan(), {}
    for task in tasks:
        if task.id in result.outputs:
            raise InvalidInput(f"two tasks share the id '{task.id}'", param="tasks")
        same = task.model_dump_json(exclude={"id"})  # tasks equal but for their id do the same work
        if same not in seen:
            seen[same] = _plan_task(result, task, present, heads or {})
        result.outputs[task.id] = seen[same]
    return result


def _plan_task(plan: Plan, task: s.ComposeTask, present: set[str], heads: Heads) -> str:
    """Adds the nodes ``task`` needs; returns the one holding its result."""
    require(present, _needs(task), task.id)
    match task:
        case s.EmbedTask():
            return embedding(plan, task.modality)
        case s.ClassifyTask() | s.FeaturesTask() | s.CaptionTask() | s.VQATask():
            return own(plan, task, task.type, decoded(plan, _needs(task)))
        case s.ZeroShotTask():  # the label prompts are embedded beside the image, not after it
            labels = plan.add(Node(f"labels:{task.id}", "embed_labels", (), task=task))
            return own(plan, task, "zero_shot", (embedding(plan, "image"), labels))
        case s.TranscribeTask() | s.TranslateTask() | s.LanguageTask():
            return speech(plan, transcription(task), task.id)
        case s.SearchTask():
            query = transcript_embedding(plan) if task.query == "audio" else embedding(plan, task.query)
            return own(plan, task, "search", (query,))
        case s.FuseTask():
            return _plan_fuse(plan, task, present, heads[task.head])
    raise InvalidInput(f"unknown task type '{task.type}'", param="tasks")


def _needs(task: s.ComposeTask) -> str | None:
    """The input a task cannot run without (fusion takes whichever its head knows)."""
    match task:
        case s.EmbedTask():
            return task.modality
        case s.SearchTask():
            return task.query
        case s.TranscribeTask() | s.TranslateTask() | s.LanguageTask() | s.FeaturesTask():
            return "audio"
        case s.FuseTask():
            return None
    return "image"  # classify, zero_shot, caption, vqa


def _plan_fuse(plan: Plan, task: s.FuseTask, present: set[str], modalities: list[str]) -> str:
    """Fusion waits for the fusion features of every modality present that the head knows; absent
    ones are masked by the head."""
    usable = [m for m in modalities if m in present]
    if not usable:
        raise InvalidInput(
            f"head '{task.head}' takes {', '.join(modalities)}; the request carries none of them",
            param="inputs",
        )
    return own(plan, task, "fuse", tuple(fusion_features(plan, m) for m in usable))


# ---- execution -----------------------------------------------------------------------------
Runner = Callable[[Node, tuple], Awaitable[Any]]
Finished = Callable[[Node, Any, Timing], None]


async def execute(the_plan: Plan, run: Runner, finished: Finished | None = None) -> Execution:
    """Run every node once its dependencies finished; the first failure cancels the rest.
    ``finished`` (if given) is told of each node as it finishes, with its value and timing."""
    origin = time.perf_counter()
    futures: dict[str, asyncio.Task] = {}
    timings: dict[str, Timing] = {}

    async def one(node: Node) -> Any:
        args = tuple([await futures[dep] for dep in node.deps])
        started = time.perf_counter()
        with tracing.span(f"compose {node.id}", compose_op=node.op), call_times.measured() as times:
            out = await run(node, args)
        timings[node.id] = Timing(
            round((started - origin) * 1000, 2), round((time.perf_counter() - started) * 1000, 2), *times.ms()
        )
        if finished is not None:
            finished(node, out, timings[node.id])
        return out

    for node in _topological(the_plan):
        futures[node.id] = asyncio.ensure_future(one(node))
    try:
        done = await asyncio.gather(*futures.values())
    except BaseException:
        for task in futures.values():
            task.cancel()
        raise
    return Execution(results=dict(zip(futures, done)), timings=timings)


def _topological(the_plan: Plan) -> list[Node]:
    """Dependencies before dependents (plans are built that way; this checks it)."""
    seen: set[str] = set()
    for node in the_plan.nodes.values():
        missing = [d for d in node.deps if d not in seen]
        if missing:
            raise RuntimeError(f"node {node.id} planned before its dependencies {missing}")
        seen.add(node.id)
    return list(the_plan.nodes.values())
