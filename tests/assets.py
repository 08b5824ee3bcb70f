"""Real test inputs made from what installed packages ship: scikit-image photos and espeak-ng speech."""

from __future__ import annotations

import functools
import io
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

EN_SENTENCE = "the quick brown fox jumps over the lazy dog and runs into the forest"
DE_SENTENCE = "Guten Morgen. Das Wetter ist heute sehr schön und ich trinke einen Kaffee."


@functools.cache
def photo(name: str, fmt: str = "JPEG") -> bytes:
    """A photo that scikit-image or scikit-learn ships (chelsea = cat, coffee, rocket, astronaut,
    china, flower...) encoded as bytes."""
    from tools.demo_data import source_photo

    buf = io.BytesIO()
    Image.fromarray(source_photo(name)).save(buf, format=fmt)
    return buf.getvalue()


@functools.cache
def speech(text: str, voice: str = "en-us") -> bytes:
    """WAV bytes of ``text`` spoken by espeak-ng (installed by `make setup`; a test fails without it)."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is required for speech tests: apt-get install espeak-ng (make setup does this)"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", voice, "-s", "150", "-w", str(out), text], check=True, capture_output=True)
        return out.read_bytes()


def tone(seconds: float, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def bomb_png(side: int = 8000) -> bytes:
    """A tiny file that decodes to side x side pixels (a decompression bomb for small limits)."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    def norm(x: str) -> str:
        return "".join(c for c in x.lower() if c.isalnum() or c.isspace())

    return jiwer.wer(norm(reference), norm(hypothesis))


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (for test and benchmark servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape_metrics(port: int, wanted: list[str], *, timeout_s: float = 60.0) -> str:
    """Ray's Prometheus endpoint once it shows every string in ``wanted`` (metrics export lags)."""
    import time

    import requests

    deadline, body = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(w in body for w in wanted):
            break
        time.sleep(2)
    assert all(w in body for w in wanted), [w for w in wanted if w not in body]
    return body
