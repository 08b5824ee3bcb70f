"""A streamed transcription or translation as OpenAI's server-sent events: ``transcript.text.delta``
for each decoded segment (the first without a leading space, the next ones with one, so the deltas
joined are the text), then ``transcript.text.done`` with the whole text and the seconds of audio as
``usage``, then ``data: [DONE]``. A failure after the 200 went out is the stream's last event, in the
error shape (``errors.error_event``: ``{"error": {...}, "status": 504}``), which the ``openai`` client
raises as an ``APIError``; a failure before the first segment (a bad option, the deadline, a held
input) is a plain error answer instead (``started``). Events carry no ``event:`` name, as OpenAI
sends them: the ``type`` says what each is."""

from __future__ import annotations

from collections.abc import AsyncIterator

from api import schemas as s
from deployments.gateway import errors, sse


async def started(segments: AsyncIterator[dict]) -> AsyncIterator[dict]:
    """``segments`` once its first segment came: what fails before it is raised here, before the 200."""
    first = await anext(segments, None)

    async def chained() -> AsyncIterator[dict]:
        try:
            if first is not None:
                yield first
            async for segment in segments:
                yield segment
        finally:
            await segments.aclose()  # type: ignore[attr-defined]

    return chained()


async def events(segments: AsyncIterator[dict], *, seconds: float) -> AsyncIterator[str]:
    """The events of one transcription whose segments (``TranscriptSegment`` dicts) come in order."""
    texts: list[str] = []
    try:
        async for segment in segments:
            text = segment["text"].strip()
            if text:
                delta = f" {text}" if texts else text
                texts.append(text)
                yield sse.event(None, s.TranscriptTextDeltaEvent(delta=delta).model_dump())
        done = s.TranscriptTextDoneEvent(
            text=" ".join(texts), usage=s.DurationUsage(seconds=round(seconds, 3))
        )
        yield sse.event(None, done.model_dump())
    except Exception as exc:  # the 200 is out: the failure becomes the stream's last event
        yield sse.event(None, errors.error_event(exc))
    yield sse.DONE
