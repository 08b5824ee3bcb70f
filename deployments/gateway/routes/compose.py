"""``POST /v1/compose``: one request with any mix of image, text and audio, and several typed tasks,
planned into a DAG of steps (``planner.plan``), each run by the service that owns it
(``ComposedRequest.run``), with independent branches at once."""

from __future__ import annotations

from fastapi import APIRouter

from api import schemas as s
from deployments.gateway import deps, planner, routing
from deployments.gateway.composed_request import ComposedRequest

router = APIRouter()


@routing.post(
    router,
    "/v1/compose",
    body=s.ComposeRequest,
    modality="any",
    multipart=False,
    response_model=s.ComposeResponse,
)
async def compose(svc: deps.ServicesDep, tenant: deps.CurrentTenant, body=routing.body_of(s.ComposeRequest)):
    """Plan the tasks into a DAG over the deployments and run it: independent branches at once."""
    tasks = body.named_tasks()
    if any(isinstance(t, s.CaptionTask | s.VQATask) for t in tasks):
        svc.vision_language.deployment()  # 503 naming the switch when off, before anything is decoded
    heads = {t.head: await svc.fusion.modalities(tenant, t.head) for t in tasks if isinstance(t, s.FuseTask)}
    the_plan = planner.plan(tasks, body.inputs.present(), heads)
    request = ComposedRequest(svc, tenant, body.inputs)
    run = await planner.execute(the_plan, request.run)
    results = {t.id: await request.result(t, run.results[the_plan.outputs[t.id]]) for t in tasks}
    return s.ComposeResponse(results=results, dag=_dag(the_plan, run), latency_ms=_latency(run))


def _dag(the_plan: planner.Plan, run: planner.Execution) -> s.Dag:
    nodes = [
        s.DagNode(
            id=n.id,
            op=n.op,
            deps=list(n.deps),
            started_ms=run.timings[n.id].started_ms,
            latency_ms=run.timings[n.id].latency_ms,
        )
        for n in the_plan.nodes.values()
    ]
    return s.Dag(nodes=nodes, edges=[list(edge) for edge in the_plan.edges()])


def _latency(run: planner.Execution) -> float:
    return round(max((t.started_ms + t.latency_ms for t in run.timings.values()), default=0.0), 2)
