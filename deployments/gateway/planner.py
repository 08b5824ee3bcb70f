"""The per-request planner: turns a composed request's tasks into a DAG of operations and runs it.

Each task expands into the nodes it needs (decode the image, embed it, classify it...), through the
planner its type names in the compose table (``compose.TASKS``). Nodes that several tasks share
(one image embedding for ``embed``, ``zero_shot`` and ``search``) are planned once. ``execute``
starts every node as soon as its dependencies are done, so independent branches run concurrently
and dependent ones after; each node's runner gets its dependencies' results in ``deps`` order.
Ray-free: the gateway supplies the runners.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.errors import InvalidInput


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


# ---- shared nodes ---------------------------------------------------------------------------
def require(present: set[str], modality: str, task_id: str) -> None:
    if modality not in present:
        raise InvalidInput(
            f"task '{task_id}' needs the {modality} input, which the request does not carry",
            param=f"inputs.{modality}",
        )


def decoded(plan: Plan, modality: str) -> tuple[str, ...]:
    """Image and audio are decoded once in the gateway; text needs no decoding."""
    if modality == "text":
        return ()
    return (plan.add(Node(f"decode:{modality}", f"decode_{modality}", (), {"modality": modality})),)


def embedding(plan: Plan, modality: str) -> str:
    return plan.add(
        Node(f"embed:{modality}", f"embed_{modality}", decoded(plan, modality), {"modality": modality})
    )


def speech(plan: Plan, task: str, params: dict) -> str:
    """One Whisper pass per distinct (task, language); prompted or sampled runs stay separate."""
    plain = params.get("prompt") is None and not params.get("temperature")
    key = f"{task}:{params.get('language') or 'auto'}" if plain else f"{task}:{params['id']}"
    return plan.add(Node(f"speech:{key}", "speech", decoded(plan, "audio"), {**params, "task": task}))


def transcript_embedding(plan: Plan) -> str:
    """Speech queries: transcribe (language detected), then embed the transcript as text."""
    spoken = speech(plan, "transcribe", {"language": None})
    return plan.add(Node("embed:transcript", "embed_transcript", (spoken,)))


def fusion_features(plan: Plan, modality: str) -> str:
    return plan.add(
        Node(
            f"fusion_features:{modality}",
            f"fusion_features_{modality}",
            decoded(plan, modality),
            {"modality": modality},
        )
    )


def own(plan: Plan, task: dict, op: str, deps: tuple[str, ...]) -> str:
    """The task's own node, named after the task."""
    return plan.add(Node(f"{op}:{task['id']}", op, deps, task))


# ---- planning -------------------------------------------------------------------------------
TaskPlanner = Callable[[Plan, dict, set[str]], str]


def _same_task(task: dict) -> str:
    """Tasks equal in everything but their id do the same work."""
    return json.dumps({k: v for k, v in task.items() if k != "id"}, sort_keys=True, default=str)


def plan(tasks: Iterable[dict], present: set[str], planners: Mapping[str, TaskPlanner]) -> Plan:
    """The DAG for ``tasks`` (dicts with ``id`` and ``type``) given the modalities present; each type's
    planner adds the nodes it needs and returns the node holding its result. Identical tasks share it."""
    result, seen = Plan(), {}
    for task in tasks:
        if task["id"] in result.outputs:
            raise InvalidInput(f"two tasks share the id '{task['id']}'", param="tasks")
        if task["type"] not in planners:
            raise InvalidInput(f"unknown task type '{task['type']}'", param="tasks")
        same = _same_task(task)
        if same not in seen:
            seen[same] = planners[task["type"]](result, task, present)
        result.outputs[task["id"]] = seen[same]
    return result


# ---- execution -----------------------------------------------------------------------------
Runner = Callable[[Node, tuple], Awaitable[Any]]


async def execute(the_plan: Plan, run: Runner) -> Execution:
    """Run every node once its dependencies finished; the first failure cancels the rest."""
    origin = time.perf_counter()
    futures: dict[str, asyncio.Task] = {}
    timings: dict[str, Timing] = {}

    async def one(node: Node) -> Any:
        args = tuple([await futures[dep] for dep in node.deps])
        started = time.perf_counter()
        out = await run(node, args)
        timings[node.id] = Timing(
            round((started - origin) * 1000, 2), round((time.perf_counter() - started) * 1000, 2)
        )
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
