"""Per-modality autoscaling on a real Ray session: audio load over HTTP scales AudioModel alone, and
it scales back under a light stream, with no request failing on the way up or down."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from ray import serve

from graphs.app import build_app
from tests import assets
from tests.conftest import TEST_ARGS

pytestmark = pytest.mark.slow

APP = "scale"
SCALING = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 1,
    "downscale_delay_s": 5,
}
SCALE_ARGS = {
    **TEST_ARGS,
    "vision": {**TEST_ARGS["vision"], "autoscaling": SCALING},
    "audio": {
        **TEST_ARGS["audio"],
        "autoscaling": SCALING,
        "model": {"model": "whisper-tiny.en", "cpu_threads": 1},
    },
}
HEAVY_WORKERS = 4
SCALE_UP_TIMEOUT_S = 150
SCALE_DOWN_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 60
# A sequential stream with no pause keeps about one request in flight, which is the scaling target:
# Serve may then scale up again right after scaling down (CI saw a replica STARTING 3 s after; and
# 4 s after with a 1 s pause, when a loaded clip took a few seconds). A 3 s pause keeps the light
# stream's average well under one request in flight.
LIGHT_PAUSE_S = 3.0


def _replicas(status, deployment: str) -> dict[str, int]:
    """{"RUNNING": n, ...} of one deployment of the test app, as ``serve.status()`` reports it."""
    states = status.applications[APP].deployments[deployment].replica_states
    return {getattr(state, "value", str(state)): n for state, n in states.items() if n}


class _Traffic:
    """Closed-loop transcription clients: ``heavy`` workers until told to stop, one ``light`` stream
    throughout. Every outcome is kept; nothing is retried."""

    def __init__(self, url: str, wav: bytes, hard_stop_s: float) -> None:
        self.url, self.wav = url, wav
        self.hard_stop = time.monotonic() + hard_stop_s
        self.stop_heavy, self.stop_all = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[tuple[str, float, int | None, str]] = []  # (stream, finished_at, status, detail)
        self.threads: list[threading.Thread] = []

    def _running(self, stop: threading.Event) -> bool:
        return not stop.is_set() and not self.stop_all.is_set() and time.monotonic() < self.hard_stop

    def _loop(self, stream: str, stop: threading.Event) -> None:
        with requests.Session() as session:
            while self._running(stop):
                files = {"file": ("speech.wav", self.wav, "audio/wav")}
                try:
                    r = session.post(
                        self.url, files=files, data={"response_format": "json"}, timeout=REQUEST_TIMEOUT_S
                    )
                    ok = r.status_code == 200 and bool(r.json().get("text", "").strip())
                    outcome = (r.status_code, "" if ok else r.text[:300])
                except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
                    outcome = (None, repr(exc))
                with self.lock:
                    self.outcomes.append((stream, time.monotonic(), *outcome))
                if (
                    stream == "light"
                ):  # well under target_ongoing_requests (1): one clip at a time, with a pause
                    stop.wait(LIGHT_PAUSE_S)

    def start(self, stream: str, stop: threading.Event) -> None:
        t = threading.Thread(target=self._loop, args=(stream, stop), name=f"load-{stream}", daemon=True)
        self.threads.append(t)
        t.start()

    def count(self, stream: str | None = None, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for s, at, *_ in self.outcomes if (stream is None or s == stream) and at >= since)

    def failures(self) -> list:
        with self.lock:
            return [o for o in self.outcomes if o[2] != 200 or o[3]]

    def join(self, stream_prefix: str = "", timeout: float = REQUEST_TIMEOUT_S + 5) -> list[str]:
        """Wait for the matching threads; returns the names of any still alive."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            if t.name.startswith(f"load-{stream_prefix}"):
                t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self.threads if t.name.startswith(f"load-{stream_prefix}") and t.is_alive()]


def test_audio_load_scales_audio_only_and_back(ray_cluster):
    wav = assets.speech(assets.EN_SENTENCE)
    started = time.monotonic()
    serve.run(build_app(SCALE_ARGS), name=APP, route_prefix=f"/{APP}")
    deployed = time.monotonic()
    history: list[tuple[float, dict, dict]] = []  # (t, AudioModel states, VisionEncoder states)

    def poll() -> tuple[dict, dict]:
        status = serve.status()
        audio, vision = _replicas(status, "AudioModel"), _replicas(status, "VisionEncoder")
        history.append((round(time.monotonic() - deployed, 1), audio, vision))
        return audio, vision

    def trail() -> str:
        return "\n".join(f"  t={t:5.1f}s audio={a} vision={v}" for t, a, v in history[-15:])

    traffic = _Traffic(
        f"http://127.0.0.1:{ray_cluster['port']}/{APP}/v1/audio/transcriptions",
        wav,
        hard_stop_s=SCALE_UP_TIMEOUT_S + SCALE_DOWN_TIMEOUT_S + 30,
    )
    try:
        audio, vision = poll()
        assert audio == {"RUNNING": 1} and vision == {"RUNNING": 1}, trail()

        # 1. Audio-only load until Serve runs a second AudioModel replica.
        traffic.start("light", traffic.stop_all)
        for i in range(HEAVY_WORKERS):
            traffic.start(f"heavy{i}", traffic.stop_heavy)
        deadline = time.monotonic() + SCALE_UP_TIMEOUT_S
        while audio.get("RUNNING", 0) < 2:
            assert time.monotonic() < deadline, (
                f"AudioModel did not reach 2 RUNNING replicas within {SCALE_UP_TIMEOUT_S}s of audio load "
                f"({traffic.count()} requests done, failures: {traffic.failures()[:3]}):\n{trail()}"
            )
            time.sleep(0.5)
            audio, vision = poll()
        scaled_up = time.monotonic()
        assert audio == {"RUNNING": 2}, trail()
        assert vision == {"RUNNING": 1}, f"VisionEncoder scaled without vision traffic:\n{trail()}"

        # 2. Heavy load off, one sequential stream on: Serve must drain back to one replica.
        traffic.stop_heavy.set()
        assert not traffic.join("heavy"), "heavy load threads did not stop"
        heavy_done = time.monotonic()
        deadline = heavy_done + SCALE_DOWN_TIMEOUT_S
        while audio != {"RUNNING": 1}:
            assert time.monotonic() < deadline, (
                f"AudioModel did not scale back to 1 replica within {SCALE_DOWN_TIMEOUT_S}s of light load:\n{trail()}"
            )
            time.sleep(0.5)
            audio, vision = poll()
        scaled_down = time.monotonic()
        # The light stream keeps being served by the remaining replica.
        while traffic.count("light", since=scaled_down) < 2:
            assert time.monotonic() < scaled_down + REQUEST_TIMEOUT_S, "light stream stalled after scale-down"
            time.sleep(0.2)
        audio, vision = poll()
        assert audio == {"RUNNING": 1} and vision == {"RUNNING": 1}, trail()
    finally:
        traffic.stop_all.set()
        stuck = traffic.join()
        serve.delete(APP)
    assert not stuck, f"load threads still running: {stuck}"

    assert all(v == {"RUNNING": 1} for _, _, v in history), f"VisionEncoder left its minimum:\n{trail()}"
    failures = traffic.failures()
    assert not failures, f"{len(failures)} of {traffic.count()} requests failed, e.g. {failures[:5]}"
    light = traffic.count("light")
    assert light >= 3, f"the light stream completed only {light} requests"
    print(
        f"\nautoscaling: deploy {deployed - started:.1f}s, scale-up {scaled_up - deployed:.1f}s, "
        f"scale-down {scaled_down - heavy_done:.1f}s after heavy load stopped; "
        f"{traffic.count()} requests ({light} light), none failed"
    )
