"""The live speech WebSocket over real HTTP, through Serve's proxy, on the session's served graph
(its ``live_speech`` limits: tests/conftest.py): a spoken clip sent as PCM chunks gives partial then
final text; bad frames, an over-size utterance and an idle connection close it with their codes.
The handshake's refusals (a bad key) are in tests/http/test_tenants.py, whose app has keys."""

import asyncio
import json

import numpy as np
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from models.media import SAMPLE_RATE, decode_audio
from tests import assets

pytestmark = pytest.mark.slow
CHUNK_S = 0.25


def ws_url(base_url: str, query: str = "language=en") -> str:
    return (
        base_url.replace("http://", "ws://") + "/v1/audio/transcriptions/ws" + (f"?{query}" if query else "")
    )


def pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def chunks(raw: bytes, seconds: float = CHUNK_S) -> list[bytes]:
    step = int(seconds * SAMPLE_RATE) * 2
    return [raw[i : i + step] for i in range(0, len(raw), step)]


@pytest.fixture(scope="module")
def spoken() -> bytes:
    return pcm(decode_audio(assets.speech(assets.EN_SENTENCE)))


async def _next(ws, *types: str) -> dict:
    """The next message of one of ``types`` (an ``error`` message fails the test)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 120))
        assert message["type"] != "error", message
        if message["type"] in types:
            return message


async def _closed(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 60)
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_a_spoken_clip_in_chunks_gives_partial_then_final_text(base_url, spoken):
    async def talk():
        async with websockets.connect(ws_url(base_url), subprotocols=["mmserve.v1"]) as ws:
            created = await _next(ws, "session.created")
            assert ws.subprotocol == "mmserve.v1"
            half = chunks(spoken)[: len(chunks(spoken)) // 2]
            for chunk in half:
                await ws.send(chunk)
            partial = await _next(ws, "transcript.partial")  # due after partial_every_s of audio
            for chunk in chunks(spoken)[len(half) :]:
                await ws.send(chunk)
            await ws.send(json.dumps({"type": "commit"}))
            final = await _next(ws, "transcript.final")
            await ws.send(json.dumps({"type": "commit"}))  # an empty utterance: empty final, no model call
            empty = await _next(ws, "transcript.final")
            return created, partial, final, empty

    created, partial, final, empty = asyncio.run(talk())
    print(partial, final)
    assert created["session"]["sample_rate"] == SAMPLE_RATE and created["session"]["encoding"] == "pcm_s16le"
    assert partial["utterance"] == final["utterance"] == 0 and empty["utterance"] == 1
    assert 0 < partial["audio_s"] < final["audio_s"] == pytest.approx(len(spoken) / 2 / SAMPLE_RATE, abs=1e-3)
    assert partial["text"], partial
    assert assets.wer(assets.EN_SENTENCE, final["text"]) <= 0.25, final["text"]
    assert final["language"] == "en" and empty["text"] == "" and empty["audio_s"] == 0


@pytest.mark.parametrize(
    "frame, reason",
    [
        (b"\x00\x01\x02", "odd count"),
        ("not json", "JSON"),
        (json.dumps({"type": "explode"}), "type is one of"),
    ],
)
def test_a_bad_frame_closes_the_socket_with_1003(base_url, frame, reason):
    async def send_bad():
        async with websockets.connect(ws_url(base_url)) as ws:
            await _next(ws, "session.created")
            await ws.send(frame)
            return await _closed(ws)

    code, why = asyncio.run(send_bad())
    assert code == 1003 and reason in why, (code, why)


def test_an_utterance_over_max_buffer_s_closes_the_socket_with_1009(base_url):
    second = pcm(np.zeros(SAMPLE_RATE, dtype=np.float32))

    async def overfill():
        async with websockets.connect(ws_url(base_url)) as ws:
            session = (await _next(ws, "session.created"))["session"]
            for _ in range(int(session["max_buffer_s"]) + 1):
                await ws.send(second)
            return session, await _closed(ws)

    session, (code, why) = asyncio.run(overfill())
    assert session["max_buffer_s"] == 20.0
    assert code == 1009 and "max_buffer_s" in why, (code, why)


def test_a_silent_connection_is_closed_after_idle_timeout_s(base_url):
    async def idle():
        async with websockets.connect(ws_url(base_url)) as ws:
            session = (await _next(ws, "session.created"))["session"]
            return session, await _closed(ws)  # sends nothing

    session, (code, why) = asyncio.run(idle())
    assert session["idle_timeout_s"] == 3.0
    assert code == 4408 and "idle_timeout_s" in why, (code, why)


def test_bad_options_refuse_the_handshake_with_400(base_url):
    async def connect():
        async with websockets.connect(ws_url(base_url, "task=sing")):
            pass

    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(connect())
    answer = refused.value.response
    assert answer.status_code == 400, answer.status_code
    assert json.loads(answer.body)["error"]["param"] == "task"
