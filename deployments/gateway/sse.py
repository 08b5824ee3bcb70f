"""Server-sent events, as the gateway's streamed answers write them (compose, transcription)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

EVENT_STREAM = "text/event-stream"
DONE = "data: [DONE]\n\n"


def event(name: str | None, data: dict) -> str:
    """One event: ``event: name`` (when named) and its data as compact JSON."""
    body = f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
    return body if name is None else f"event: {name}\n{body}"


def wanted(stream: bool, accept: str | None) -> bool:
    """The body's ``stream`` flag, or an ``Accept: text/event-stream`` header."""
    return stream or EVENT_STREAM in (accept or "")


def response(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type=EVENT_STREAM, headers={"Cache-Control": "no-cache"})


def documented(description: str) -> dict:
    """The OpenAPI ``responses`` entry of a route that may answer with an event stream."""
    return {200: {"content": {EVENT_STREAM: {"schema": {"type": "string", "description": description}}}}}
