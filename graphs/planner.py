"""The per-request planner: turns a composed request's tasks into a DAG of operations and runs it.

Each task expands into the nodes it needs (decode the image, embed it, classify it...). Nodes that
several tasks share (one image embedding for ``embed``, ``zero_shot`` and ``search``) are planned
once. ``execute`` starts every node as soon as its dependencies are done, so independent branches
run concurrently and dependent ones after. Ray-free: the gateway supplies the operations.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from models.errors import InvalidInput

MODALITIES = ("image", "text", "audio")


@dataclass(frozen=True)
class Node:
    id: str
    op: str
    deps: tuple[str, ...] = ()
    params: dict = field(default_factory=dict, compare=False, hash=False)


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


@dataclass
class Execution:
    results: dict[str, Any]
    timings: dict[str, Timing]


# ---- planning ------------------------------------------------------------------------------
def _require(present: set[str], modality: str, task_id: str) -> None:
    if modality not in present:
        raise InvalidInput(f"task '{task_id}' needs the {modality} input, which the request does not carry",
                           param=f"inputs.{modality}")


def _decoded(plan: Plan, modality: str) -> tuple[str, ...]:
    """Image and audio are decoded once in the gateway; text needs no decoding."""
    if modality == "text":
        return ()
    return (plan.add(Node(f"decode:{modality}", f"decode_{modality}")),)


def _embedding(plan: Plan, modality: str) -> str:
    return plan.add(Node(f"embed:{modality}", f"embed_{modality}", _decoded(plan, modality)))


def _speech(plan: Plan, task: str, params: dict) -> str:
    """One Whisper pass per distinct (task, language); prompted or sampled runs stay separate."""
    plain = params.get("prompt") is None and not params.get("temperature")
    key = f"{task}:{params.get('language') or 'auto'}" if plain else f"{task}:{params['id']}"
    return plan.add(Node(f"speech:{key}", "speech", _decoded(plan, "audio"), {**params, "task": task}))


def _transcript_embedding(plan: Plan) -> str:
    """Speech queries: transcribe (language detected), then embed the transcript as text."""
    spoken = _speech(plan, "transcribe", {"language": None})
    return plan.add(Node("embed:transcript", "embed_transcript", (spoken,)))


def _plan_task(plan: Plan, task: dict, present: set[str]) -> str:
    kind, tid = task["type"], task["id"]
    if kind == "embed":
        _require(present, task["modality"], tid)
        return _embedding(plan, task["modality"])
    if kind == "classify":
        _require(present, "image", tid)
        return plan.add(Node(f"classify:{tid}", kind, _decoded(plan, "image"), task))
    if kind == "zero_shot":  # the label prompts are embedded beside the image, not after it
        _require(present, "image", tid)
        labels = plan.add(Node(f"labels:{tid}", "embed_labels", (), task))
        return plan.add(Node(f"zero_shot:{tid}", kind, (_embedding(plan, "image"), labels), task))
    if kind in ("transcribe", "translate", "features"):
        _require(present, "audio", tid)
        if kind == "features":
            return plan.add(Node(f"features:{tid}", "features", _decoded(plan, "audio"), task))
        return _speech(plan, kind, task)
    if kind == "search":
        return _plan_search(plan, task, present)
    if kind == "fuse":
        return _plan_fuse(plan, task, present)
    raise InvalidInput(f"unknown task type '{kind}'", param="tasks")


def _plan_search(plan: Plan, task: dict, present: set[str]) -> str:
    by = task["query"]
    _require(present, by, task["id"])
    query = _transcript_embedding(plan) if by == "audio" else _embedding(plan, by)
    return plan.add(Node(f"search:{task['id']}", "search", (query,), task))


def _plan_fuse(plan: Plan, task: dict, present: set[str]) -> str:
    """Fusion waits for the fusion features (pooled + token-level) of every modality present that
    the head knows; absent ones are masked by the head."""
    usable = [m for m in task["modalities"] if m in present]
    if not usable:
        raise InvalidInput(f"head '{task['head']}' takes {', '.join(task['modalities'])}; the request carries "
                           f"none of them", param="inputs")
    deps = tuple(plan.add(Node(f"fusion_features:{m}", f"fusion_features_{m}", _decoded(plan, m))) for m in usable)
    return plan.add(Node(f"fuse:{task['id']}", "fuse", deps, task))


def plan(tasks: Iterable[dict], present: set[str]) -> Plan:
    """The DAG for ``tasks`` (dicts with ``id`` and ``type``) given the modalities present."""
    result = Plan()
    for task in tasks:
        if task["id"] in result.outputs:
            raise InvalidInput(f"two tasks share the id '{task['id']}'", param="tasks")
        result.outputs[task["id"]] = _plan_task(result, task, present)
    return result


# ---- execution -----------------------------------------------------------------------------
Runner = Callable[[Node, dict[str, Any]], Awaitable[Any]]


async def execute(the_plan: Plan, run: Runner) -> Execution:
    """Run every node once its dependencies finished; the first failure cancels the rest."""
    origin = time.perf_counter()
    futures: dict[str, asyncio.Task] = {}
    timings: dict[str, Timing] = {}

    async def one(node: Node) -> Any:
        deps = {dep: await futures[dep] for dep in node.deps}
        started = time.perf_counter()
        out = await run(node, deps)
        timings[node.id] = Timing(round((started - origin) * 1000, 2), round((time.perf_counter() - started) * 1000, 2))
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
