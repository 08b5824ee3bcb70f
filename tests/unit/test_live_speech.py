"""The live speech socket's pieces without Ray: the utterance buffer's bounds, control frames, the
handshake's options and where a browser's key comes from (deployments/gateway/live_speech.py)."""

import numpy as np
import pytest
from starlette.websockets import WebSocket

from deployments.gateway import live_speech as live
from models.errors import InvalidInput


def test_the_utterance_holds_pcm_up_to_max_buffer_s_and_starts_over_when_taken():
    utterance = live.Utterance(max_buffer_s=1.0)
    utterance.append(np.full(8000, 16384, dtype="<i2").tobytes())
    assert utterance.seconds == 0.5 and not utterance.due(1.0) and utterance.due(0.5)
    assert utterance.partial().max() == pytest.approx(0.5) and not utterance.due(0.5)
    with pytest.raises(live.Closing) as odd:
        utterance.append(b"\x00\x01\x02")
    assert odd.value.code == live.Close.BAD_FRAME
    with pytest.raises(live.Closing) as full:
        utterance.append(bytes(2 * 8001))
    assert full.value.code == live.Close.TOO_BIG and "max_buffer_s" in full.value.reason
    assert utterance.take().size == 8000 and utterance.samples == 0 and utterance.number == 1


@pytest.mark.parametrize("frame", ["", "[]", "{", '{"type": "start"}', '"commit"'])
def test_an_unknown_control_frame_is_a_bad_frame(frame):
    with pytest.raises(live.Closing) as closing:
        live.control(frame)
    assert closing.value.code == live.Close.BAD_FRAME


def test_known_control_frames():
    assert [live.control(f'{{"type": "{t}"}}') for t in live.CONTROLS] == ["commit", "clear"]


def test_the_handshake_options():
    assert live.options_of({}).task == "transcribe" and live.options_of({"language": "de"}).language == "de"
    assert live.options_of({"task": "translate", "language": "de"}).language is None
    for bad, param in [
        ({"task": "sing"}, "task"),
        ({"language": "en; drop"}, "language"),
        ({"prompt": "x" * 1001}, "prompt"),
    ]:
        with pytest.raises(InvalidInput) as refused:
            live.options_of(bad)
        assert refused.value.param == param


def _socket(headers: dict[str, str]) -> WebSocket:
    scope = {"type": "websocket", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    return WebSocket(scope, receive=None, send=None)


def test_a_browser_key_comes_as_a_subprotocol_and_a_header_wins():
    offered = {"sec-websocket-protocol": "mmserve.v1, mmserve.key.mms_ab_cd"}
    assert live.key_headers(_socket(offered)) == {"authorization": "Bearer mms_ab_cd"}
    both = {**offered, "authorization": "Bearer mms_header"}
    assert live.key_headers(_socket(both)) == {"authorization": "Bearer mms_header"}
    assert live.offered(_socket(offered)) == ["mmserve.v1", "mmserve.key.mms_ab_cd"]
    assert live.key_headers(_socket({})) == {}


def test_sessions_beyond_max_sessions_are_refused():
    from config.settings import LiveSpeechLimits
    from models.errors import Overloaded

    sessions, limits = live.Sessions(), LiveSpeechLimits(max_sessions=1)
    sessions.enter(limits, 1.0)
    with pytest.raises(Overloaded):
        sessions.enter(limits, 1.0)
    sessions.leave()
    sessions.enter(limits, 1.0)
