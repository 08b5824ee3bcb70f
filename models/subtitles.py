"""Transcript renderings for the OpenAI-style ``response_format`` values srt and vtt.

Both take any sequence of segments with ``start``, ``end`` (seconds) and ``text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Timed(Protocol):
    start: float
    end: float
    text: str


def _timestamp(seconds: float, *, sep: str) -> str:
    millis = int(round(max(seconds, 0.0) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def to_srt(segments: Sequence[Timed]) -> str:
    return "\n".join(
        f"{i}\n{_timestamp(s.start, sep=',')} --> {_timestamp(s.end, sep=',')}\n{s.text}\n"
        for i, s in enumerate(segments, start=1)
    )


def to_vtt(segments: Sequence[Timed]) -> str:
    cues = [f"{_timestamp(s.start, sep='.')} --> {_timestamp(s.end, sep='.')}\n{s.text}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)
