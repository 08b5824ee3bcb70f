"""The Batch API over real HTTP with the official ``openai`` client: a batch of lines runs on Ray Data
(a detached runner, an actor pool of the same backends as the served models) and every custom_id lands
once in the output or the error file; a bad line fails alone; a runner killed with SIGKILL mid-run is
restarted by Ray and resumes from its committed blocks with nothing lost or doubled."""

from __future__ import annotations

import base64
import json
import os
import signal
import time

import numpy as np
import pytest
import requests

from tests import assets, speech_corpus

pytestmark = pytest.mark.slow  # each batch starts a Ray Data pool that loads its model: ~75 s in all

DONE = ("completed", "failed", "cancelled", "expired")
TEXT_MODEL, IMAGE_MODEL = "all-MiniLM-L6-v2", "conse-efficientnet-lite0"


@pytest.fixture(scope="module")
def openai_client(base_url):
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused-on-loopback", max_retries=0)


def jsonl(lines: list[dict | str]) -> bytes:
    return b"".join((x if isinstance(x, str) else json.dumps(x)).encode() + b"\n" for x in lines)


def request(custom_id: str, url: str, body: dict) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def wait(openai_client, batch_id: str, timeout_s: float = 240.0):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = openai_client.batches.retrieve(batch_id)
        if batch.status in DONE or time.monotonic() > deadline:
            return batch
        time.sleep(0.5)


def results(openai_client, file_id: str | None) -> dict[str, dict]:
    """custom_id -> line of a result file, checking each custom_id is there once."""
    if file_id is None:
        return {}
    lines = [json.loads(x) for x in openai_client.files.content(file_id).text.splitlines()]
    ids = [x["custom_id"] for x in lines]
    assert len(ids) == len(set(ids)), f"a custom_id is there twice: {ids}"
    return {x["custom_id"]: x for x in lines}


def run_batch(openai_client, lines: list, endpoint: str):
    source = openai_client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    assert source.purpose == "batch" and source.bytes == len(jsonl(lines))
    batch = openai_client.batches.create(input_file_id=source.id, endpoint=endpoint, completion_window="24h")
    assert batch.status == "validating" and batch.input_file_id == source.id
    return wait(openai_client, batch.id)


def test_openai_client_runs_a_text_batch_and_bad_lines_fail_alone(openai_client, base_url):
    lines = [
        request("a", "/v1/embeddings", {"model": TEXT_MODEL, "input": "a cat on a sofa"}),
        request("b", "/v1/embeddings", {"model": TEXT_MODEL, "input": ["a red car", "the sea"]}),
        request("c", "/v1/embeddings", {"model": TEXT_MODEL}),  # no input: a schema violation
        request("d", "/v1/classify", {"image": "AAAA"}),  # not this batch's endpoint
        request("e", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}),
        "{not json",
    ]
    batch = run_batch(openai_client, lines, "/v1/embeddings")
    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        6,
        2,
        4,
    )
    out, err = results(openai_client, batch.output_file_id), results(openai_client, batch.error_file_id)
    assert set(out) == {"a", "b"} and set(err) == {"c", "d", "e", None}
    assert [err[k]["response"]["status_code"] for k in ("c", "d", "e", None)] == [422, 400, 404, 400]
    assert err["d"]["error"]["code"] == "invalid_request_error" and "url" in err["d"]["error"]["message"]
    online = requests.post(
        f"{base_url}/v1/embeddings", json={"model": TEXT_MODEL, "input": ["a red car", "the sea"]}, timeout=60
    ).json()
    got = out["b"]["response"]["body"]
    assert got["model"] == TEXT_MODEL and len(got["data"]) == 2
    for mine, theirs in zip(got["data"], online["data"]):
        assert np.allclose(mine["embedding"], theirs["embedding"], atol=1e-4)
    assert out["a"]["response"]["status_code"] == 200 and out["a"]["error"] is None


def test_image_batches_embed_and_classify_and_a_corrupt_image_fails_alone(openai_client, base_url):
    cat, coffee = (base64.b64encode(assets.photo(n)).decode() for n in ("chelsea", "coffee"))
    broken = base64.b64encode(assets.photo("rocket")[:300]).decode()
    lines = [
        request("cat", "/v1/embeddings/image", {"images": [cat]}),
        request("both", "/v1/embeddings/image", {"images": [cat, coffee]}),
        request("broken", "/v1/embeddings/image", {"images": [broken]}),
        request("not-base64", "/v1/embeddings/image", {"images": ["%%%"]}),
    ]
    batch = run_batch(openai_client, lines, "/v1/embeddings/image")
    assert batch.status == "completed" and batch.request_counts.failed == 2, batch
    out, err = results(openai_client, batch.output_file_id), results(openai_client, batch.error_file_id)
    assert set(out) == {"cat", "both"} and set(err) == {"broken", "not-base64"}
    assert err["broken"]["response"]["status_code"] == 400
    online = requests.post(
        f"{base_url}/v1/embeddings/image", json={"images": [cat, coffee]}, timeout=60
    ).json()
    body = out["both"]["response"]["body"]
    assert (body["model"], body["space"], body["dim"]) == (online["model"], online["space"], online["dim"])
    for mine, theirs in zip(body["data"], online["data"]):
        assert np.allclose(mine["embedding"], theirs["embedding"], atol=1e-3)

    classified = run_batch(
        openai_client, [request("cat", "/v1/classify", {"image": cat, "top_k": 3})], "/v1/classify"
    )
    top = results(openai_client, classified.output_file_id)["cat"]["response"]["body"]["predictions"]
    online = requests.post(f"{base_url}/v1/classify", json={"image": cat, "top_k": 3}, timeout=60).json()
    assert [p["label"] for p in top] == [p["label"] for p in online["predictions"]]


def test_a_transcription_batch_answers_as_the_online_route_and_bad_clips_fail_alone(openai_client, base_url):
    """Base64 audio in the JSON body, as the online route takes it; the same Whisper on the batch's
    audio pool; a corrupt clip and one over the online duration cap (20 s here) fail alone with the
    online route's status and error."""
    url = "/v1/audio/transcriptions"
    said = (speech_corpus.SENTENCES[3], speech_corpus.SENTENCES[6])
    weather, conference = (base64.b64encode(assets.speech(x)).decode() for x in said)
    corrupt = base64.b64encode(assets.speech(said[0])[:30]).decode()  # the WAV header cut short
    too_long = base64.b64encode(assets.tone(21)).decode()
    bodies = {
        "weather": {"file": weather, "language": "en"},
        "conference": {"file": conference, "response_format": "verbose_json"},
        "corrupt": {"file": corrupt, "language": "en"},
        "too-long": {"file": too_long},
    }
    batch = run_batch(openai_client, [request(k, url, v) for k, v in bodies.items()], url)
    assert batch.status == "completed", batch
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2), batch
    out, err = results(openai_client, batch.output_file_id), results(openai_client, batch.error_file_id)
    assert set(out) == {"weather", "conference"} and set(err) == {"corrupt", "too-long"}
    for name in bodies:
        online = requests.post(f"{base_url}{url}", json=bodies[name], timeout=120)
        mine = (out.get(name) or err[name])["response"]
        assert mine["status_code"] == online.status_code, (name, mine, online.text)
        if name in out:
            got, want = mine["body"], online.json()
            assert set(got) == set(want) and got["text"] == want["text"], (got, want)
            assert assets.wer(said[name == "conference"], got["text"]) <= 0.3, got["text"]
        else:
            expected = {k: online.json()["error"][k] for k in ("type", "message", "param")}
            assert mine["body"]["error"] == expected
    assert out["weather"]["response"]["body"] == {"text": out["weather"]["response"]["body"]["text"]}
    verbose = out["conference"]["response"]["body"]
    assert verbose["language"] == "en" and verbose["task"] == "transcribe" and verbose["segments"]


def test_files_and_batches_are_listed_read_and_deleted(openai_client, base_url):
    content = jsonl([request("x", "/v1/embeddings", {})])  # refused before any model: no pool load
    source = openai_client.files.create(file=("x.jsonl", content), purpose="batch")
    assert openai_client.files.retrieve(source.id).filename == "x.jsonl"
    assert openai_client.files.content(source.id).content == content
    made = [
        openai_client.batches.create(
            input_file_id=source.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        for _ in range(2)
    ]
    assert all(wait(openai_client, b.id).request_counts.failed == 1 for b in made)
    listed = requests.get(f"{base_url}/v1/batches", params={"limit": 1}, timeout=30).json()
    assert listed["object"] == "list" and len(listed["data"]) == 1 and listed["has_more"] is True
    after = requests.get(f"{base_url}/v1/batches", params={"after": listed["last_id"]}, timeout=30).json()
    assert {b.id for b in made} <= {listed["last_id"], *(b["id"] for b in after["data"])}
    assert openai_client.files.delete(source.id).deleted is True
    missing = requests.get(f"{base_url}/v1/files/{source.id}", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong = requests.post(
        f"{base_url}/v1/files", files={"file": ("x", b"{}\n")}, data={"purpose": "fine-tune"}, timeout=30
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "purpose"


def _state(data_dir, batch_id: str) -> dict:
    path = data_dir / "batches" / "default" / "batches" / batch_id / "batch.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_a_runner_killed_mid_run_resumes_with_nothing_lost_or_doubled(openai_client, served, ray_cluster):
    import ray

    from deployments.batch.runner import NAMESPACE, actor_name

    n = 120
    lines = [
        request(f"r{i}", "/v1/embeddings", {"model": TEXT_MODEL, "input": f"line {i}"}) for i in range(n)
    ]
    source = openai_client.files.create(file=("many.jsonl", jsonl(lines)), purpose="batch")
    batch = openai_client.batches.create(
        input_file_id=source.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    if not ray.is_initialized():
        ray.init(address=ray_cluster["gcs_address"])
    runner = ray.get_actor(actor_name(batch.id), namespace=NAMESPACE)
    pid = ray.get(runner.pid.remote(), timeout=60)
    deadline = time.monotonic() + 180
    while _state(served["data_dir"], batch.id).get("request_counts", {}).get("completed", 0) < 4:
        assert time.monotonic() < deadline, "the batch never got going"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    at_kill = _state(served["data_dir"], batch.id)["request_counts"]["completed"]
    assert at_kill < n, "the batch finished before the kill: make it longer"
    done = wait(openai_client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (n, n, 0)
    out = results(openai_client, done.output_file_id)  # checks each custom_id is there once
    assert set(out) == {f"r{i}" for i in range(n)}
    print(f"\nkilled runner pid {pid} at {at_kill}/{n} committed; finished {n}/{n}, 0 lost, 0 duplicated")
