"""Live speech over the WebSocket against a running server: a spoken recording sent at real-time pace
(0.25 s chunks, as a microphone gives them), then committed. Prints, per run, when the first partial
transcript came (from the first chunk sent), how long the final took after the commit, the whole
session, and the final's word error rate.

    python -m benchmarks.live_speech --url http://127.0.0.1:8000 --seconds 10 --repeat 3

Distinct inputs: each run speaks other sentences (tests/speech_corpus.py), so nothing is shared
between runs; Whisper runs on the AudioModel replica (the final's ``latency_ms`` is not sent, the
times are the client's)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import numpy as np
import websockets

from tests import assets
from tests.speech_corpus import long_recordings

CHUNK_S = 0.25
RATE = 16_000


def _pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def session(url: str, audio: np.ndarray, *, pace: float = 1.0) -> dict:
    """One utterance at ``pace`` x real time: times (s) of the first partial, the final, and the text."""
    raw, step = _pcm(audio), int(CHUNK_S * RATE) * 2
    seen: dict = {"partials": 0}
    async with websockets.connect(url, subprotocols=["mmserve.v1"], max_size=None) as ws:
        await ws.recv()  # session.created
        started = time.perf_counter()

        async def listen() -> None:
            async for message in ws:
                event = json.loads(message)
                now = time.perf_counter() - started
                if event["type"] == "transcript.partial":
                    seen["partials"] += 1
                    seen.setdefault("first_partial_s", now)
                    seen.setdefault("first_partial_audio_s", event["audio_s"])
                elif event["type"] == "transcript.final":
                    seen.update(final_s=now, text=event["text"])
                    return
                elif event["type"] == "error":
                    raise RuntimeError(event)

        listener = asyncio.create_task(listen())
        for i in range(0, len(raw), step):
            await ws.send(raw[i : i + step])
            await asyncio.sleep(CHUNK_S / pace)
        seen["commit_s"] = time.perf_counter() - started
        await ws.send(json.dumps({"type": "commit"}))
        await listener
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each spoken recording")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    url = args.url.replace("http", "ws", 1).rstrip("/") + "/v1/audio/transcriptions/ws?language=en"
    recordings = long_recordings(args.seconds, count=args.repeat + 1)
    asyncio.run(session(url, recordings[0].audio))  # warm-up
    rows = [asyncio.run(session(url, r.audio)) for r in recordings[1:]]
    for row, rec in zip(rows, recordings[1:]):
        row["wer"] = assets.wer(rec.reference, row["text"])
        print(
            f"{rec.audio.size / RATE:5.1f} s audio  first partial {row['first_partial_s']:5.2f} s "
            f"(after {row['first_partial_audio_s']:.2f} s of audio, {row['partials']} partials)  "
            f"final {row['final_s'] - row['commit_s']:5.2f} s after the commit "
            f"({row['final_s']:5.2f} s from the first chunk)  WER {row['wer']:.2f}"
        )
    median = statistics.median
    print(
        f"median: first partial {median(r['first_partial_s'] for r in rows):.2f} s from the first chunk; "
        f"final {median(r['final_s'] - r['commit_s'] for r in rows):.2f} s after the commit, "
        f"{median(r['final_s'] for r in rows):.2f} s from the first chunk"
    )


if __name__ == "__main__":
    main()
