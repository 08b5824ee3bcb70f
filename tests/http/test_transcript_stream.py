"""A long recording streamed: the first words arrive well before the whole transcript, and a client
that leaves stops the decoding on the AudioModel replica (its ``stream_stats`` counters)."""

import json
import time

import pytest
import requests

from tests import assets
from tests.conftest import TEST_ARGS
from tests.speech_corpus import long_recordings, wav_bytes

pytestmark = pytest.mark.slow
APP = "longspeech"
LONG_ARGS = {  # the test app's 20 s audio limit, raised for a 60 s recording
    **TEST_ARGS,
    "gateway": {
        **TEST_ARGS["gateway"],
        "settings": {**TEST_ARGS["gateway"]["settings"], "max_audio_seconds": 90},
    },
}
PROMPT = "A recording of plain sentences."  # prompted: faster-whisper's sliding window, window by window


@pytest.fixture(scope="module")
def base_url(ray_cluster):
    from ray import serve

    from graphs.app import build_app

    serve.run(build_app(LONG_ARGS), name=APP, route_prefix=f"/{APP}")
    yield f"http://127.0.0.1:{ray_cluster['port']}/{APP}"
    serve.delete(APP)


@pytest.fixture(scope="module")
def long_wav():
    recording = long_recordings(60.0, count=1)[0]
    return recording, wav_bytes(recording)


def _stream(base_url: str, wav: bytes, **form):
    return requests.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("long.wav", wav, "audio/wav")},
        data={"stream": "true", **form},
        stream=True,
        timeout=300,
    )


def _events(answer):
    assert answer.status_code == 200, answer.text
    for line in answer.iter_lines(decode_unicode=True):
        if line.startswith("data: {"):
            yield time.perf_counter(), json.loads(line[6:])


def _stream_stats() -> dict:
    from ray import serve

    return serve.get_deployment_handle("AudioModel", APP).stream_stats.remote().result()


def test_the_first_delta_of_a_long_recording_comes_well_before_the_whole_transcript(base_url, long_wav):
    recording, wav = long_wav
    started = time.perf_counter()
    timed = list(_events(_stream(base_url, wav)))
    first, total = timed[0][0] - started, timed[-1][0] - started
    done = timed[-1][1]
    print(f"\n{recording.seconds:.1f} s recording: first delta {first:.2f} s, done {total:.2f} s")
    assert done["type"] == "transcript.text.done" and len(timed) > 2, timed
    assert first < 0.6 * total, (first, total)
    assert "".join(e["delta"] for _, e in timed[:-1]) == done["text"]
    assert assets.wer(recording.reference, done["text"]) <= 0.3, done["text"]


def test_leaving_a_stream_stops_the_decoding_on_the_replica(base_url, long_wav):
    _, wav = long_wav
    before = _stream_stats()
    whole = list(_events(_stream(base_url, wav, prompt=PROMPT)))
    after_whole = _stream_stats()
    segments = after_whole.get("segments", 0) - before.get("segments", 0)
    assert whole[-1][1]["type"] == "transcript.text.done" and segments > 2, (whole, segments)
    answer = _stream(base_url, wav, prompt=PROMPT)
    next(_events(answer))  # the first delta, then away
    answer.close()
    time.sleep(8.0)  # the window being decoded when the client left still finishes
    left = _stream_stats()
    assert left.get("left", 0) == after_whole.get("left", 0) + 1, left
    assert left.get("finished", 0) == after_whole.get("finished", 0), left
    assert left.get("segments", 0) - after_whole.get("segments", 0) < segments, (left, segments)


def test_a_refusal_before_the_first_segment_is_a_plain_error_answer(base_url):
    answer = _stream(base_url, assets.speech(assets.EN_SENTENCE), language="xx")
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "language", answer.text
