"""A streamed compose without Ray: the events of a planned run (deployments/gateway/routes/compose.py)
and the client's reading of them (clients.client.server_sent_events)."""

import asyncio
import json

from pydantic import TypeAdapter

from api import schemas as s
from clients.client import server_sent_events
from deployments.gateway import planner
from deployments.gateway.routes import compose
from models.errors import InvalidInput

TASK = TypeAdapter(s.ComposeTask)
TASKS = [
    TASK.validate_python(t)
    for t in ({"id": "c", "type": "classify", "top_k": 1}, {"id": "e", "type": "embed", "modality": "text"})
]
SLOW = {"embed:text": 0.3}  # seconds each node's step takes (others: 0.01)


class _Request:
    """Stands in for ComposedRequest: each step sleeps, then answers its node's id."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail, self.finished = fail, []

    async def run(self, node, args):
        await asyncio.sleep(SLOW.get(node.id, 0.01))
        if node.id == self.fail:
            raise InvalidInput("bad input", param="inputs.text")
        self.finished.append(node.id)
        return [{"index": 0, "label": node.id, "score": 1.0}] if node.op == "classify" else [0.5]

    async def result(self, task, value):
        if task.type == "classify":
            return s.ClassifyResponse(model="m", predictions=value)
        return s.EmbedResult(model="m", space="sp", dim=1, embedding=value)


def _events(request) -> list[tuple[str, dict | str]]:
    run = compose._Run(TASKS, planner.plan(TASKS, {"image", "text"}), request)

    async def collect():
        return [chunk async for chunk in run.events()]

    text = "".join(asyncio.run(collect()))
    return [(e, json.loads(d)) for e, d in server_sent_events(iter(text.split("\n")))]


def test_nodes_stream_in_the_order_they_finish_then_the_whole_response():
    events = _events(_Request())
    names = [e for e, _ in events]
    assert names == ["node", "node", "node", "response"]
    ids = [d["id"] for _, d in events[:3]]
    assert ids == ["decode:image", "classify:c", "embed:text"]  # the 0.3 s embedding last
    assert events[1][1]["results"]["c"]["predictions"][0]["label"] == "classify:c"
    assert events[0][1]["results"] == {} and set(events[3][1]["results"]) == {"c", "e"}


def test_a_failing_node_is_the_last_event_in_the_error_shape_and_the_rest_is_cancelled():
    request = _Request(fail="classify:c")
    events = _events(request)
    assert [e for e, _ in events] == ["node", "error"]
    assert events[-1][1] == {
        "error": {
            "type": "invalid_request_error",
            "message": "bad input",
            "param": "inputs.text",
            "request_id": None,
        },
        "status": 400,
    }
    assert "embed:text" not in request.finished


def test_closing_the_stream_cancels_the_nodes_still_running():
    request = _Request()
    run = compose._Run(TASKS, planner.plan(TASKS, {"image", "text"}), request)

    async def leave_after_the_first_event():
        events = run.events()
        first = await anext(events)
        await events.aclose()  # what Starlette does when the client disconnects
        await asyncio.sleep(0.5)  # long enough for an uncancelled embedding to finish
        return first

    assert '"id":"decode:image"' in asyncio.run(leave_after_the_first_event())
    assert "embed:text" not in request.finished


def test_server_sent_events_are_read_as_sent():
    text = (
        'event: node\ndata: {"a":1}\n\n: a comment\ndata: line one\ndata: line two\n\n'
        "data: [DONE]\n\ndata: after\n\n"
    )
    assert list(server_sent_events(iter(text.split("\n")))) == [
        ("node", '{"a":1}'),
        ("message", "line one\nline two"),
    ]
