"""The per-request planner: which nodes a composed request needs, and that it runs them as a DAG."""

import asyncio

import pytest
from pydantic import TypeAdapter

from api import schemas as s
from deployments.gateway import planner
from models.errors import InvalidInput

TASK = TypeAdapter(s.ComposeTask)


def _plan(tasks: list[dict], present: set[str], heads: dict | None = None) -> planner.Plan:
    """Plan tasks given as on the wire (with their ids), typed as the route types them."""
    return planner.plan([TASK.validate_python(t) for t in tasks], present, heads)


def _ids(the_plan):
    return set(the_plan.nodes)


def test_shared_nodes_are_planned_once():
    tasks = [
        {"id": "e", "type": "embed", "modality": "image"},
        {"id": "z", "type": "zero_shot", "labels": ["cat"], "template": "{}"},
        {"id": "c", "type": "classify", "top_k": 3},
    ]
    the_plan = _plan(tasks, {"image"})
    assert _ids(the_plan) == {"decode:image", "embed:image", "labels:z", "zero_shot:z", "classify:c"}
    assert the_plan.outputs == {"e": "embed:image", "z": "zero_shot:z", "c": "classify:c"}
    assert ("embed:image", "zero_shot:z") in the_plan.edges()
    assert ("labels:z", "zero_shot:z") in the_plan.edges()
    assert ("decode:image", "classify:c") in the_plan.edges()


def test_spoken_search_chains_transcription_then_text_embedding_and_shares_the_transcript():
    tasks = [
        {"id": "s", "type": "search", "index": "photos", "query": "audio", "top_k": 3, "where": {}},
        {"id": "t", "type": "transcribe", "language": None},
    ]
    the_plan = _plan(tasks, {"audio"})
    assert the_plan.outputs["t"] == "speech:transcribe:auto"
    assert ("decode:audio", "speech:transcribe:auto") in the_plan.edges()
    assert ("speech:transcribe:auto", "embed:transcript") in the_plan.edges()
    assert ("embed:transcript", "search:s") in the_plan.edges()


def test_language_identification_shares_the_transcription_pass():
    tasks = [{"id": "l", "type": "language"}, {"id": "t", "type": "transcribe", "language": None}]
    the_plan = _plan(tasks, {"audio"})
    assert the_plan.outputs == {"l": "speech:transcribe:auto", "t": "speech:transcribe:auto"}


def test_prompted_transcriptions_are_not_shared():
    tasks = [
        {"id": "a", "type": "transcribe", "language": None, "prompt": "names: Ada"},
        {"id": "b", "type": "transcribe", "language": None},
    ]
    assert set(_plan(tasks, {"audio"}).outputs.values()) == {
        "speech:transcribe:a",
        "speech:transcribe:auto",
    }


def test_fuse_waits_for_the_features_of_the_modalities_present():
    tasks = [{"id": "f", "type": "fuse", "head": "h"}]
    the_plan = _plan(tasks, {"image", "text"}, {"h": ["image", "text", "audio"]})
    assert the_plan.nodes["fuse:f"].deps == ("fusion_features:image", "fusion_features:text")
    assert the_plan.nodes["fuse:f"].task == s.FuseTask(id="f", type="fuse", head="h")
    with pytest.raises(InvalidInput, match="none of them"):
        _plan(tasks, {"image"}, {"h": ["audio"]})


@pytest.mark.parametrize(
    "task, missing",
    [
        ({"id": "c", "type": "classify", "top_k": 1}, "image"),
        ({"id": "t", "type": "translate"}, "audio"),
        ({"id": "e", "type": "embed", "modality": "text"}, "text"),
        ({"id": "s", "type": "search", "index": "i", "query": "image", "top_k": 1, "where": {}}, "image"),
    ],
)
def test_a_task_without_its_modality_is_refused_naming_the_input(task, missing):
    with pytest.raises(InvalidInput) as err:
        _plan([task], {"text"} if missing != "text" else {"image"})
    assert err.value.param == f"inputs.{missing}"


def test_identical_tasks_share_one_node():
    tasks = [
        {"id": f"t{n}", "type": "transcribe", "language": None, "prompt": "names: Ada"} for n in range(16)
    ]
    the_plan = _plan(tasks, {"audio"})
    assert [n.op for n in the_plan.nodes.values()].count("speech") == 1
    assert set(the_plan.outputs.values()) == {"speech:transcribe:t0"}


def test_duplicate_task_ids_are_refused():
    tasks = [{"id": "x", "type": "classify", "top_k": 1}, {"id": "x", "type": "classify", "top_k": 2}]
    with pytest.raises(InvalidInput, match="share the id"):
        _plan(tasks, {"image"})


def test_execute_runs_independent_branches_concurrently_and_dependents_after():
    tasks = [
        {"id": "c", "type": "classify", "top_k": 1},
        {"id": "e", "type": "embed", "modality": "text"},
        {"id": "t", "type": "transcribe", "language": None},
    ]
    the_plan = _plan(tasks, {"image", "text", "audio"})
    order = []

    async def run(node, args):
        order.append(("start", node.id))
        await asyncio.sleep(0.3 if node.op != "decode_image" and node.op != "decode_audio" else 0.05)
        order.append(("end", node.id))
        return {"node": node.id, "deps": [a["node"] for a in args]}

    result = asyncio.run(planner.execute(the_plan, run))
    t = result.timings
    assert result.results["classify:c"]["deps"] == ["decode:image"]
    # dependents start only after their dependency ended
    assert t["classify:c"].started_ms >= t["decode:image"].started_ms + t["decode:image"].latency_ms - 1
    # the three branches overlap in time: each starts before the others end
    branches = ["classify:c", "embed:text", "speech:transcribe:auto"]
    for a in branches:
        for b in branches:
            assert t[a].started_ms < t[b].started_ms + t[b].latency_ms
    total = max(x.started_ms + x.latency_ms for x in t.values())
    assert total < 0.3 * 3 * 1000 * 0.67  # far from the serial sum (0.9 s + decodes)


def test_execute_cancels_the_rest_when_a_node_fails():
    tasks = [{"id": "c", "type": "classify", "top_k": 1}, {"id": "e", "type": "embed", "modality": "text"}]
    the_plan = _plan(tasks, {"image", "text"})
    finished = []

    async def run(node, args):
        if node.id == "embed:text":
            raise InvalidInput("bad text", param="inputs.text")
        await asyncio.sleep(0.2)
        finished.append(node.id)

    async def fail_then_keep_the_loop_running():
        with pytest.raises(InvalidInput, match="bad text"):
            await planner.execute(the_plan, run)
        await asyncio.sleep(0.6)  # long enough for every uncancelled node to finish on this loop

    asyncio.run(fail_then_keep_the_loop_running())
    assert finished == []  # the decode and classify nodes were cancelled, not left running


def test_each_node_reports_the_queue_and_replica_time_of_its_own_calls():
    """A node's model calls (also those made in tasks it starts) add up in its timing; a node that made
    no call (decoding) reports none, and a sibling's calls are not counted in it."""
    from deployments.gateway import call_times

    the_plan = _plan([{"id": "c", "type": "classify", "top_k": 1}], {"image"})

    async def run(node, args):
        if node.op == "classify":  # two calls: 5 ms queued + 20 ms in a replica, 1 + 4, one in a sub-task
            call_times.record(10.000, 10.005, 10.025)
            await asyncio.ensure_future(_record_later(call_times, 20.000, 20.001, 20.005))
        return node.id

    timings = asyncio.run(planner.execute(the_plan, run)).timings
    assert (timings["classify:c"].queue_ms, timings["classify:c"].replica_ms) == (6.0, 24.0)
    assert (timings["decode:image"].queue_ms, timings["decode:image"].replica_ms) == (None, None)


async def _record_later(call_times, sent, assigned, answered):
    await asyncio.sleep(0)
    call_times.record(sent, assigned, answered)
