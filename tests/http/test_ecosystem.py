"""The ecosystem's conventions: the official openai client, OpenAPI, schemathesis, our CLI and async client."""

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from api import schemas as s
from clients import cli
from clients.client import AsyncClient, Client
from tests import assets
from tests.speech_corpus import THREE, recording, wav_bytes

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    paths = {"cat": d / "cat.jpg", "coffee": d / "coffee.jpg", "en": d / "en.wav", "de": d / "de.wav"}
    paths["cat"].write_bytes(assets.photo("chelsea"))
    paths["coffee"].write_bytes(assets.photo("coffee"))
    paths["en"].write_bytes(assets.speech(assets.EN_SENTENCE))
    paths["de"].write_bytes(assets.speech(assets.DE_SENTENCE, voice="de"))
    paths["three"] = d / "three.wav"  # several segments
    paths["three"].write_bytes(wav_bytes(recording(THREE)))
    return paths


@pytest.fixture(scope="module")
def openai_client(base_url):
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused-on-loopback", max_retries=0)


def test_openai_transcribes_wav(openai_client, files):
    with open(files["en"], "rb") as f:
        result = openai_client.audio.transcriptions.create(model="whisper-1", file=f)
    assert assets.wer(assets.EN_SENTENCE, result.text) <= 0.3, result.text


def test_openai_streams_a_transcription_as_delta_events_then_done(openai_client, files):
    """stream=True: the official client iterates OpenAI's transcript.text.delta / .done events."""
    with open(files["en"], "rb") as f:
        events = list(openai_client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    *deltas, done = events
    assert deltas and all(e.type == "transcript.text.delta" for e in deltas), events
    assert done.type == "transcript.text.done" and "".join(e.delta for e in deltas) == done.text
    assert assets.wer(assets.EN_SENTENCE, done.text) <= 0.3, done.text
    assert done.usage.type == "duration" and done.usage.seconds > 1, done.usage


def test_a_streamed_translation_is_english_events(base_url, files):
    with open(files["de"], "rb") as f:
        answer = requests.post(
            f"{base_url}/v1/audio/translations", files={"file": f}, data={"stream": "true"}, timeout=120
        )
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]
    assert events[-1]["type"] == "transcript.text.done" and "coffee" in events[-1]["text"].lower(), events


def test_openai_transcription_word_timestamps(openai_client, files):
    """The official client sends timestamp_granularities[] parts; with 'word', verbose_json has words."""
    with open(files["en"], "rb") as f:
        result = openai_client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    words = result.words
    assert assets.wer(assets.EN_SENTENCE, " ".join(w.word for w in words)) <= 0.3, words
    assert all(0 <= w.start <= w.end <= result.duration + 0.05 for w in words) and result.segments
    with open(files["en"], "rb") as f:
        plain = openai_client.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json"
        )
    assert getattr(plain, "words", None) is None


def test_openai_translates_wav(openai_client, files):
    with open(files["de"], "rb") as f:
        result = openai_client.audio.translations.create(model="whisper-1", file=f)
    assert {"morning", "weather", "coffee"} & set(
        result.text.lower().replace(",", " ").replace(".", " ").split()
    )


def test_openai_text_and_image_embeddings(openai_client):
    models = {m.id for m in openai_client.models.list()}
    assert {"all-MiniLM-L6-v2", "conse-efficientnet-lite0"} <= models
    text = openai_client.embeddings.create(
        model="all-MiniLM-L6-v2", input=["a cat", "a car"]
    )  # base64 on the wire
    url = "data:image/jpeg;base64," + base64.b64encode(assets.photo("chelsea")).decode()
    image = openai_client.embeddings.create(
        model="conse-efficientnet-lite0", input=url, encoding_format="float"
    )
    cat, car = (np.asarray(d.embedding) for d in text.data)
    img = np.asarray(image.data[0].embedding)
    assert cat.shape == img.shape == (384,)
    assert img @ cat > img @ car


def test_openai_embeddings_base64_matches_float(base_url):
    body = {"model": "all-MiniLM-L6-v2", "input": "hello"}
    floats = requests.post(f"{base_url}/v1/embeddings", json=body, timeout=60).json()["data"][0]["embedding"]
    b64 = requests.post(f"{base_url}/v1/embeddings", json={**body, "encoding_format": "base64"}, timeout=60)
    decoded = np.frombuffer(base64.b64decode(b64.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats, atol=1e-6)


def test_unknown_embedding_model_is_404(base_url):
    r = requests.post(
        f"{base_url}/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, timeout=30
    )
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_committed_openapi_is_what_is_served(base_url):
    served = requests.get(f"{base_url}/openapi.json", timeout=30).json()
    assert served == json.loads((ROOT / "openapi.json").read_text()), (
        "run `make openapi` and commit openapi.json"
    )


def test_schemathesis_finds_no_server_error(base_url):
    """Bounded property-based run over every route of the served spec."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(ROOT / "tests/http/schemathesis_vl_off.toml"),
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "20",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
            "--request-timeout",
            "60",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    failures = done.stdout.find("FAILURES")
    assert done.returncode == 0, (
        done.stdout[failures : failures + 3000] + done.stdout[-1500:] + done.stderr[-1500:]
    )
    paths = json.loads((ROOT / "openapi.json").read_text())["paths"]
    operations = sum(len(methods) for methods in paths.values())
    assert f"Tested: {operations}" in done.stdout, done.stdout[-2000:]  # every operation was exercised


def test_cli_round_trips(base_url, files, tmp_path, capsys):
    def run(*args):
        assert cli.main(["--url", base_url, *map(str, args)]) == 0
        return capsys.readouterr().out

    assert "tabby" in run("classify", files["cat"], files["coffee"]) or "tiger cat" in run(
        "classify", files["cat"]
    )
    assert (
        json.loads(run("--json", "zero-shot", files["cat"], "--labels", "cat", "dog"))[0]["labels"][0][
            "label"
        ]
        == "cat"
    )
    assert "2 x 384" in run("embed", "text", "a cat", "a dog")
    assert "1 x 384" in run("embed", "image", files["cat"])
    assert "1 x 512" in run("embed", "audio", files["en"])
    assert "'a cup of coffee'" in run(
        "retrieval", "--images", files["coffee"], "--texts", "a cup of coffee", "a cat", "--top-k", "1"
    )
    srt = tmp_path / "en.srt"
    run("transcribe", files["en"], "--format", "srt", "--output", srt)
    assert srt.read_text().startswith("1\n00:00:00,000 --> ")
    assert "coffee" in run("translate", files["de"]).lower()
    assert "whisper-base" in run("models")


def test_cli_compose_stream_prints_each_node_as_it_finishes(base_url, files, capsys):
    """Real models: the classification (tens of ms) is printed before Whisper's transcript (~1 s)."""
    args = ["compose", "--image", files["cat"], "--audio", files["en"], "--task", "classify"]
    assert cli.main(["--url", base_url, *map(str, args), "--task", "transcribe", "--stream"]) == 0
    lines = capsys.readouterr().out.splitlines()
    order = [line.split()[-1] for line in lines if " ms  " in line]
    assert order[-1] == "done" and "decode:image" in order, lines
    assert order.index("classify:classify") < order.index("speech:transcribe:auto"), lines
    out = "\n".join(lines)
    assert ("tabby" in out or "tiger cat" in out) and "fox" in out.lower(), out


def test_client_and_cli_stream_a_transcription(base_url, files, capsys):
    """``Client.transcribe_stream``: the deltas joined are the done event's text; ``mmserve transcribe
    --stream`` prints that text, and ``--json`` one event per line."""
    with Client(base_url) as client:
        events = list(client.transcribe_stream(files["three"], language="en"))
    *deltas, done = events
    assert len(deltas) >= 2 and all(isinstance(e, s.TranscriptTextDeltaEvent) for e in deltas), events
    assert isinstance(done, s.TranscriptTextDoneEvent) and "".join(e.delta for e in deltas) == done.text
    assert "quarterly" in done.text.lower() and done.usage.seconds > 10
    assert (
        cli.main(["--url", base_url, "transcribe", str(files["three"]), "--language", "en", "--stream"]) == 0
    )
    assert capsys.readouterr().out.strip() == done.text
    assert cli.main(["--url", base_url, "--json", "transcribe", str(files["en"]), "--stream"]) == 0
    types = [json.loads(line)["type"] for line in capsys.readouterr().out.splitlines()]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"}, types


def test_cli_features_png(base_url, files, tmp_path):
    png = tmp_path / "features.png"
    assert cli.main(["--url", base_url, "features", str(files["en"]), "--output", str(png)]) == 0
    image = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert image.shape[0] > 400 and image.shape[1] > 600
    assert image.std() > 20  # three heat maps, not a blank canvas


def test_cli_reports_server_errors(base_url, files, capsys):
    assert cli.main(["--url", base_url, "transcribe", str(files["cat"])]) == 1
    assert "415" in capsys.readouterr().err


def test_async_client_concurrent(base_url, files):
    async def go():
        async with AsyncClient(base_url) as client:
            return await asyncio.gather(
                client.classify(files["cat"]), client.embed_text(["a cat"]), client.transcribe(files["en"])
            )

    classified, text, speech = asyncio.run(go())
    assert classified.predictions and text.dim == 384 and speech.language == "en"


def test_prometheus_metrics_per_route_and_batch(base_url, ray_cluster, files):
    for _ in range(3):
        requests.post(f"{base_url}/v1/classify", files={"image": files["cat"].read_bytes()}, timeout=60)
    requests.post(f"{base_url}/v1/classify", json={"image": "@@"}, timeout=60)  # a 400: not base64
    wanted = [
        "ray_mmserve_requests_total{",
        'route="/v1/classify"',
        'status="400"',
        "ray_mmserve_request_duration_seconds_bucket",
        "ray_mmserve_batch_size_bucket",
        'method="classify"',
    ]
    body = assets.scrape_metrics(ray_cluster["metrics_port"], wanted)
    errors = [
        line
        for line in body.splitlines()
        if line.startswith("ray_mmserve_errors_total") and 'status="400"' in line
    ]
    assert errors and float(errors[0].rsplit(" ", 1)[1]) >= 1
    classify = [
        line
        for line in body.splitlines()
        if line.startswith("ray_mmserve_requests_total{") and 'route="/v1/classify"' in line
    ]
    assert classify and all('modality="image"' in line for line in classify), classify  # the route's own
