"""Distinct English sentences spoken by espeak-ng, and long recordings made by concatenating them,
with their reference texts: for Whisper's quality tests and speed benchmarks (no clip repeated)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tests import assets

SENTENCES = (
    "the quick brown fox jumps over the lazy dog and runs into the forest",
    "please send the quarterly report to the whole team before friday afternoon",
    "machine learning models are served behind a gateway that batches requests",
    "the weather today is cloudy with a chance of rain in the late evening",
    "our train leaves from the north platform early tomorrow morning",
    "she bought fresh bread, two apples and a bottle of milk at the corner shop",
    "the conference starts on monday and the keynote speaker arrives on sunday",
    "the library closes early on holidays so return your books by thursday",
    "a small boat drifted slowly across the quiet lake at sunset",
    "remember to water the plants in the garden while we are away",
    "the museum opened a new exhibition about ancient maps and explorers",
    "he repaired the old bicycle and rode it to the market on saturday",
    "the children built a sand castle near the edge of the water",
    "turn left at the bakery and the post office is on your right",
    "the doctor asked him to drink more water and sleep for eight hours",
    "our neighbours painted their front door a bright shade of yellow",
    "the pilot announced that the flight would land twenty minutes early",
    "a loud thunderstorm kept the whole village awake last night",
    "the students finished their science project about volcanoes",
    "my grandmother makes the best apple pie in the entire town",
    "the mountain road was closed because of heavy snow and ice",
    "please remember to switch off the lights when you leave the office",
    "the orchestra played a beautiful symphony in the old concert hall",
    "a family of ducks crossed the street on their way to the pond",
    "the new software update fixed several bugs in the payment system",
    "we watched the fireworks from the roof of our apartment building",
    "the farmer sold fresh eggs and honey at the weekend market",
    "the detective found a hidden letter inside the wooden drawer",
    "after the long hike we rested under a tall oak tree",
    "the hotel offers a free breakfast to every guest in the morning",
    "the engineers tested the bridge before opening it to traffic",
    "the cat slept all afternoon on the warm kitchen windowsill",
    "he forgot his umbrella and got soaked walking home from work",
    "the gardeners planted roses and tulips along the stone path",
    "the bank will be closed on monday for the national holiday",
    "she practised the piano every evening before the big concert",
    "the bus was crowded so we decided to walk to the stadium",
    "the chef added a pinch of salt and a little black pepper",
    "our team won the final match after a very exciting second half",
    "the river flooded the low fields after a week of heavy rain",
    "the astronauts waved to the crowd before boarding the rocket",
    "he wrote a long letter to his friend who lives across the ocean",
    "the baker opens his shop at five and sells out before noon",
    "a gentle breeze carried the smell of pine through the valley",
    "the committee will vote on the new budget next wednesday",
    "she found her lost keys under the cushion of the old sofa",
    "the lighthouse keeper watched the ships sail past the rocky coast",
    "our history teacher told us a story about a famous explorer",
    "the printer on the third floor has run out of paper again",
    "a young fox searched for food near the edge of the campsite",
    "the city council plans to build a new park beside the river",
    "he packed a warm jacket because the nights are cold in the desert",
    "the market sells spices, dried fruit and colourful carpets",
    "the violinist tuned her instrument before the rehearsal began",
)


@dataclass(frozen=True)
class Recording:
    audio: np.ndarray  # mono float32, 16 kHz
    sentences: tuple[str, ...]

    @property
    def reference(self) -> str:
        return " ".join(self.sentences)

    @property
    def seconds(self) -> float:
        from models.media import SAMPLE_RATE

        return self.audio.size / SAMPLE_RATE


@functools.cache
def clip(sentence: str, voice: str = "en-us") -> np.ndarray:
    """One sentence as mono float32 at 16 kHz."""
    from models.media import decode_audio

    return decode_audio(assets.speech(sentence, voice=voice))


def recording(sentences: tuple[str, ...], voice: str = "en-us") -> Recording:
    """The sentences spoken one after another as one recording (espeak leaves a short pause after each)."""
    return Recording(audio=np.concatenate([clip(s, voice) for s in sentences]), sentences=tuple(sentences))


def wav_bytes(rec: Recording) -> bytes:
    """The recording as a 16 kHz mono 16-bit WAV file."""
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes((np.clip(rec.audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


THREE = SENTENCES[1:4]  # ~12 s: Whisper answers it in several segments, so a stream has several deltas


def long_recordings(seconds: float = 60.0, count: int = 3, voice: str = "en-us") -> list[Recording]:
    """``count`` recordings of at least ``seconds`` each, no sentence used twice."""
    out, pool = [], list(SENTENCES)
    for _ in range(count):
        taken: list[str] = []
        while pool and sum(clip(s, voice).size for s in taken) < seconds * 16_000:
            taken.append(pool.pop(0))
        if sum(clip(s, voice).size for s in taken) < seconds * 16_000:
            raise ValueError(f"not enough distinct sentences for {count} recordings of {seconds} s")
        out.append(recording(tuple(taken), voice))
    return out
