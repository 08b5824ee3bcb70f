"""``POST /v1/compose``: one request with any mix of image, text and audio, and several typed tasks,
planned into a DAG of steps (``planner.plan``), each run by the service that owns it
(``ComposedRequest.run``), with independent branches at once.

With ``stream: true`` (or ``Accept: text/event-stream``) the answer is server-sent events: ``node``
as each node finishes (with the typed result of each task it answers), ``response`` with the body
the plain request gets, then ``data: [DONE]``; a failure after the 200 went out is an ``error``
event in the error shape, and the nodes still running are cancelled, as they are when the client
goes away. Planning errors come before the stream, as plain 4xx answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from api import schemas as s
from deployments import request_ids
from deployments.gateway import deps, errors, planner, routing, sse
from deployments.gateway.composed_request import ComposedRequest

router = APIRouter()
_EVENTS_DOC = "with stream: 'node' events (ComposeNodeEvent), then 'response' (ComposeResponse), then [DONE]"


@routing.post(
    router,
    "/v1/compose",
    body=s.ComposeRequest,
    modality="any",
    multipart=False,
    response_model=s.ComposeResponse,
    responses=sse.documented(_EVENTS_DOC),
)
async def compose(
    request: Request,
    svc: deps.ServicesDep,
    tenant: deps.CurrentTenant,
    body=routing.body_of(s.ComposeRequest),
):
    """Plan the tasks into a DAG over the deployments and run it: independent branches at once."""
    tasks = body.named_tasks()
    if any(isinstance(t, s.CaptionTask | s.VQATask) for t in tasks):
        svc.vision_language.deployment()  # 503 naming the switch when off, before anything is decoded
    heads = {t.head: await svc.fusion.modalities(tenant, t.head) for t in tasks if isinstance(t, s.FuseTask)}
    run = _Run(
        tasks, planner.plan(tasks, body.inputs.present(), heads), ComposedRequest(svc, tenant, body.inputs)
    )
    if sse.wanted(body.stream, request.headers.get("accept")):
        return sse.response(run.events())
    return await run.response(await planner.execute(run.plan, run.request.run))


class _Run:
    """One planned composed request: run whole, or streamed node by node."""

    def __init__(self, tasks: list[s.ComposeTask], plan: planner.Plan, request: ComposedRequest) -> None:
        self.tasks, self.plan, self.request = tasks, plan, request

    async def response(self, run: planner.Execution) -> s.ComposeResponse:
        outputs = self.plan.outputs
        results = {t.id: await self.request.result(t, run.results[outputs[t.id]]) for t in self.tasks}
        return s.ComposeResponse(
            results=results,
            dag=_dag(self.plan, run),
            latency_ms=_latency(run),
            request_id=request_ids.current(),
        )

    async def events(self) -> AsyncIterator[str]:
        """The server-sent events of the run (see the module's docstring)."""
        try:
            async for item in _as_finished(self.plan, self.request):
                if isinstance(item, planner.Execution):
                    yield sse.event("response", (await self.response(item)).model_dump(mode="json"))
                else:
                    yield sse.event("node", (await self._node_event(*item)).model_dump(mode="json"))
        except Exception as exc:  # the 200 is out: the failure becomes the stream's last event
            yield sse.event("error", errors.error_event(exc))
        yield sse.DONE

    async def _node_event(self, node: planner.Node, value: Any, timing: planner.Timing) -> s.ComposeNodeEvent:
        answered = [t for t in self.tasks if self.plan.outputs[t.id] == node.id]
        return s.ComposeNodeEvent(
            id=node.id,
            op=node.op,
            deps=list(node.deps),
            **dataclasses.asdict(timing),
            results={t.id: await self.request.result(t, value) for t in answered},
        )


async def _as_finished(plan: planner.Plan, request: ComposedRequest) -> AsyncIterator[Any]:
    """``(node, value, timing)`` for each node as it finishes, then the ``Execution``; the first
    failure is raised. Closing the iterator (the client went away) cancels the nodes still running."""
    finished: asyncio.Queue = asyncio.Queue()
    running = asyncio.ensure_future(
        planner.execute(plan, request.run, lambda *done: finished.put_nowait(done))
    )
    try:
        for _ in plan.nodes:
            getter = asyncio.ensure_future(finished.get())
            await asyncio.wait({getter, running}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done() and running.exception() is not None:
                getter.cancel()
                raise running.exception()
            yield await getter
        yield await running
    finally:
        running.cancel()


def _dag(the_plan: planner.Plan, run: planner.Execution) -> s.Dag:
    nodes = [
        s.DagNode(
            id=n.id,
            op=n.op,
            deps=list(n.deps),
            **dataclasses.asdict(run.timings[n.id]),
        )
        for n in the_plan.nodes.values()
    ]
    return s.Dag(nodes=nodes, edges=[list(edge) for edge in the_plan.edges()])


def _latency(run: planner.Execution) -> float:
    return round(max((t.started_ms + t.latency_ms for t in run.timings.values()), default=0.0), 2)
