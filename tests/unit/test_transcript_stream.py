"""A streamed transcription's events without Ray (deployments/gateway/transcript_stream.py): OpenAI's
``transcript.text.delta`` / ``transcript.text.done`` shapes, read back by the ``openai`` client's
own event decoder and types."""

import asyncio
import json

import pytest
from openai._streaming import SSEDecoder
from openai.types.audio import TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent

from deployments.gateway.transcript_stream import events, started
from models.errors import DeadlineExceeded

SEGMENTS = [
    {"id": 0, "text": " Hello there."},
    {"id": 1, "text": "  "},
    {"id": 2, "text": "General Kenobi. "},
]


async def _segments(fail_after: int | None = None):
    for i, segment in enumerate(SEGMENTS):
        if i == fail_after:
            raise DeadlineExceeded("the request's deadline passed before its work finished")
        yield segment


def _decoded(fail_after: int | None = None) -> list:
    """The stream's events as the openai client decodes them (``data`` of each, [DONE] as a string)."""

    async def collect() -> str:
        return "".join([chunk async for chunk in events(_segments(fail_after), seconds=2.5)])

    raw = asyncio.run(collect()).encode()
    return [
        e.data if e.data == "[DONE]" else json.loads(e.data) for e in SSEDecoder().iter_bytes(iter([raw]))
    ]


def test_deltas_as_segments_come_then_done_with_the_text_and_the_seconds_then_done_marker():
    *deltas, done, end = _decoded()
    assert [d["delta"] for d in deltas] == ["Hello there.", " General Kenobi."]  # an empty segment: none
    assert all(TranscriptionTextDeltaEvent.model_validate(d).type == "transcript.text.delta" for d in deltas)
    assert TranscriptionTextDoneEvent.model_validate(
        {k: v for k, v in done.items() if k != "usage"}
    ).text == ("".join(d["delta"] for d in deltas))
    assert done == {
        "type": "transcript.text.done",
        "text": "Hello there. General Kenobi.",
        "usage": {"type": "duration", "seconds": 2.5},
    }
    assert end == "[DONE]"


def test_a_failure_after_the_first_delta_is_the_last_event_in_the_error_shape():
    first, error, end = _decoded(fail_after=1)
    assert first == {"type": "transcript.text.delta", "delta": "Hello there."}
    assert error["status"] == 504 and error["error"]["type"] == "deadline_exceeded", error
    assert end == "[DONE]"


def test_a_failure_before_the_first_segment_is_raised_before_the_stream_starts():
    async def first_then_rest():
        assert [s["id"] async for s in await started(_segments())] == [0, 1, 2]
        with pytest.raises(DeadlineExceeded):
            await started(_segments(fail_after=0))

    asyncio.run(first_then_rest())
