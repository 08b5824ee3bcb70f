"""Real HTTP against the real graph, driven by mmserve's client and by `requests`."""

import base64
import json

import pytest
import ray
import requests

from clients.client import MMServeError
from tests import assets

pytestmark = pytest.mark.slow


def _replicas() -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "REPLICA" in a["name"]}


def test_ready_and_models(client):
    assert client.ready().status == "ready" and client.health().status == "ok"
    assert "TextEncoder" in json.loads(client.stats())
    models = {(m.modality, m.task): m for m in client.models().data}
    assert models[("text", "embedding")].space == models[("image", "embedding")].space
    assert models[("audio", "transcription")].id == "whisper-base"


def test_classify_cat(client):
    labels = [p.label for p in client.classify(assets.photo("chelsea"), top_k=5).predictions]
    assert any(
        label in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"} for label in labels
    )


def test_zero_shot_picks_cat(client):
    result = client.zero_shot(assets.photo("chelsea"), ["cat", "dog", "car", "coffee", "rocket"])
    assert result.labels[0].label == "cat"
    assert abs(sum(x.score for x in result.labels) - 1) < 1e-4


def test_retrieval_matches_each_photo_to_its_text(client):
    photos = [assets.photo(n) for n in ("chelsea", "coffee", "rocket")]
    texts = ["a cat", "a cup of coffee", "a space rocket"]
    result = client.retrieval(photos, texts, top_k=1)
    assert [row[0].index for row in result.image_to_text] == [0, 1, 2]
    assert [col[0].index for col in result.text_to_image] == [0, 1, 2]
    assert len(result.similarity) == 3 and len(result.similarity[0]) == 3


def test_embeddings_all_modalities(client):
    text = client.embed_text(["a cat", "a dog"])
    image = client.embed_images([assets.photo("chelsea")])
    audio = client.embed_audio([assets.speech("hello there"), assets.tone(1.0)])
    assert (text.dim, image.dim, audio.dim) == (384, 384, 512)
    assert len(audio.data) == 2 and text.space == image.space


def test_transcription_wer(client):
    result = client.transcribe(assets.speech(assets.EN_SENTENCE))
    assert result.language == "en" and result.segments
    assert assets.wer(assets.EN_SENTENCE, result.text) <= 0.3, result.text


def test_german_translation(client):
    result = client.translate(assets.speech(assets.DE_SENTENCE, voice="de"))
    words = set(result.text.lower().replace(",", " ").replace(".", " ").split())
    assert result.language == "de" and result.task == "translate"
    assert {"morning", "weather", "coffee"} & words, result.text


def test_subtitle_formats(client):
    wav = assets.speech("hello world")
    srt = client.subtitles(wav, fmt="srt")
    vtt = client.subtitles(wav, fmt="vtt")
    assert srt.startswith("1\n00:00:00,000 --> ") and vtt.startswith("WEBVTT")


def test_openai_style_multipart_with_requests(base_url):
    """A third-party client, the way OpenAI's transcription route is usually called."""
    files = {"file": ("speech.wav", assets.speech("hello world"), "audio/wav")}
    r = requests.post(
        f"{base_url}/v1/audio/transcriptions",
        files=files,
        data={"model": "whisper-1", "response_format": "text"},
        timeout=120,
    )
    assert r.status_code == 200 and "hello" in r.text.lower()
    r = requests.post(
        f"{base_url}/v1/audio/transcriptions", files=files, data={"response_format": "json"}, timeout=120
    )
    assert set(r.json()) == {"text"}


def test_features(client):
    result = client.features(assets.speech("hello world"), features=["mel", "mfcc", "chroma"])
    frames = result.features["mel"].shape[1]
    assert result.features["mel"].shape == [64, frames]
    assert result.features["mfcc"].shape == [20, frames] and result.features["chroma"].shape == [12, frames]
    assert frames == pytest.approx(result.duration * result.frame_rate, abs=2)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


TRUNCATED = assets.photo("coffee")[:4000]
BAD_INPUTS = [
    ("undecodable image", "/v1/classify", {"json": {"image": _b64(b"not an image at all")}}, 415, "image"),
    ("truncated image", "/v1/classify", {"json": {"image": _b64(TRUNCATED)}}, 400, "image"),
    ("decompression bomb", "/v1/classify", {"json": {"image": _b64(assets.bomb_png(6000))}}, 413, "image"),
    (
        "empty labels",
        "/v1/zero-shot",
        {"json": {"image": _b64(assets.photo("chelsea")), "labels": []}},
        422,
        "labels",
    ),
    (
        "template without slot",
        "/v1/zero-shot",
        {"json": {"image": _b64(assets.photo("chelsea")), "labels": ["cat"], "template": "cat"}},
        400,
        "template",
    ),
    ("missing field", "/v1/classify", {"json": {"top_k": 3}}, 422, "image"),
    ("bad base64", "/v1/classify", {"json": {"image": "@@@"}}, 400, "image"),  # as on /v1/embeddings
    (
        "top_k zero",
        "/v1/classify",
        {"json": {"image": _b64(assets.photo("chelsea")), "top_k": 0}},
        422,
        "top_k",
    ),
    (
        "wrong content type",
        "/v1/classify",
        {"data": b"hello", "headers": {"content-type": "text/plain"}},
        415,
        "content-type",
    ),
    (
        "invalid json",
        "/v1/classify",
        {"data": b"{nope", "headers": {"content-type": "application/json"}},
        400,
        None,
    ),
    (
        "audio too long",
        "/v1/audio/transcriptions",
        {"files": {"file": ("t.wav", assets.tone(25))}},
        413,
        "file",
    ),
    (
        "undecodable audio",
        "/v1/audio/transcriptions",
        {"files": {"file": ("x.wav", b"RIFF garbage" * 50)}},
        415,
        "file",
    ),
    (
        "unknown language",
        "/v1/audio/transcriptions",
        {"files": {"file": ("s.wav", assets.speech("hi"))}, "data": {"language": "xx"}},
        400,
        "language",
    ),
    (
        "unknown format",
        "/v1/audio/transcriptions",
        {"files": {"file": ("s.wav", assets.speech("hi"))}, "data": {"response_format": "mp3"}},
        422,
        "response_format",
    ),
    ("no file part", "/v1/audio/translations", {"data": {"prompt": "x"}}, 422, "file"),
    ("unknown route", "/v1/nothing-here", {"json": {}}, 404, None),
]


@pytest.fixture(scope="module")
def replicas_before(served):
    return _replicas()


@pytest.mark.parametrize("name, path, kwargs, status, param", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_4xx_with_one_error_shape(
    base_url, replicas_before, name, path, kwargs, status, param
):
    r = requests.post(f"{base_url}{path}", timeout=60, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"type", "message", "param", "request_id"} and error["message"]
    if param is not None:
        assert error["param"] == param, error


def test_bad_inputs_restarted_no_replica(client, replicas_before):
    assert _replicas() == replicas_before
    assert client.ready().status == "ready"


def test_client_raises_server_error(client):
    with pytest.raises(MMServeError) as err:
        client.zero_shot(assets.photo("chelsea"), [])
    assert err.value.status == 422 and err.value.param == "labels"
