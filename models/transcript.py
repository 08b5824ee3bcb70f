"""What a speech engine is asked and answers: ``SpeechOptions`` in, a ``Transcript`` of ``Segment``s
(and ``Word``s) out. Plain data shared by the engines (``models.speech``) and the batched Whisper
decode (``models.whisper_batch``), which builds on the engines: neither imports the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Task = Literal["transcribe", "translate"]
CHUNK_SECONDS = 30  # Whisper's window


@dataclass(frozen=True)
class SpeechOptions:
    task: Task = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    beam_size: int = 1
    word_timestamps: bool = False  # faster-whisper aligns each word (cross-attention + DTW); slower


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    language_probability: float
    duration: float
    task: Task
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] | None = None  # with SpeechOptions.word_timestamps
