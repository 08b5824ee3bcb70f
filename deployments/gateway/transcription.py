"""The options of one transcription or translation, built in one place for the routes, the compose
tasks and spoken search queries (``models.speech.SpeechOptions`` on the AudioModel's side)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Transcription:
    """What the AudioModel's ``transcribe`` is asked to do (``models.speech.SpeechOptions`` on the
    replica side); the one place the gateway builds these options."""

    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None  # None: detected
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False

    @property
    def shareable(self) -> bool:
        """Unprompted greedy runs with the same task and language give the same transcript."""
        return self.prompt is None and not self.temperature
