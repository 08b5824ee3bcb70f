"""Steady mixed load from the mmserve client, counted: every request sent ends as succeeded, refused
(a final 429/503 in the error shape, with Retry-After) or failed; hung ones (no answer within the
client's timeout) are failed too, and counted apart. Loopback only, bounded in time."""

from __future__ import annotations

import io
import threading
import time
import wave
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np
from PIL import Image

from clients.client import Client, MMServeError, RetryPolicy

RETRIES = RetryPolicy(attempts=6, base_delay_s=0.2, max_delay_s=2.0)


def png(seed: int = 0, side: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


IMAGE, AUDIO = png(), wav()
CALLS = {
    "image": lambda c, i: c.classify(IMAGE, top_k=1),
    "text": lambda c, i: c.embed_text([f"a photo of thing {i}"]),
    "audio": lambda c, i: c.transcribe(AUDIO),
}


@dataclass
class Tally:
    sent: int = 0
    succeeded: int = 0
    refused: int = 0
    failed: int = 0
    hung: int = 0
    errors: Counter = field(default_factory=Counter)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (finished at, seconds)

    def row(self) -> dict:
        return {
            "sent": self.sent,
            "succeeded": self.succeeded,
            "refused": self.refused,
            "failed": self.failed,
            "hung": self.hung,
            "max_latency_s": round(max((s for _, s in self.latencies), default=0), 2),
            "errors": dict(self.errors),
        }


class Load:
    """``workers`` closed-loop clients per kind, until ``stop()`` or ``limit_s``."""

    def __init__(
        self,
        url: str,
        *,
        kinds=("image", "text", "audio"),
        workers: int = 1,
        timeout_s: float = 20,
        limit_s: float = 120,
    ) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.until = time.monotonic() + limit_s
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.tally = Tally()
        self.threads = [
            threading.Thread(target=self._loop, args=(k,), daemon=True) for k in kinds for _ in range(workers)
        ]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> Tally:
        self.stopped.set()
        for t in self.threads:
            t.join(self.timeout_s * (RETRIES.attempts + 1))
        return self.tally

    def _loop(self, kind: str) -> None:
        with Client(self.url, timeout=self.timeout_s, retry=RETRIES) as client:
            i = 0
            while not self.stopped.is_set() and time.monotonic() < self.until:
                i += 1
                self._one(kind, lambda: CALLS[kind](client, i))

    def _one(self, kind: str, send) -> None:
        started = time.monotonic()
        outcome = "succeeded"
        try:
            send()
        except MMServeError as err:
            outcome = "refused" if err.status in (429, 503) else "failed"
            detail = f"{kind} {err.status} {err.type}"
        except httpx.TimeoutException:
            outcome, detail = "hung", f"{kind} timeout"
        except Exception as err:  # noqa: BLE001 (everything is counted)
            outcome, detail = "failed", f"{kind} {type(err).__name__}"
        took = time.monotonic() - started
        with self.lock:
            t = self.tally
            t.sent += 1
            t.latencies.append((time.monotonic(), took))
            if outcome == "hung":
                t.hung += 1
                t.failed += 1
            else:
                setattr(t, outcome, getattr(t, outcome) + 1)
            if outcome != "succeeded":
                t.errors[detail] += 1
