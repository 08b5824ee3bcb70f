"""Request ids (issue 25 #1): every answer carries X-Request-ID, the client's only when well formed;
an error carries it in its body too; the replicas that worked on a request log it."""

import base64
import re
import time
from pathlib import Path

import pytest
import requests

from clients.client import MMServeError
from tests import assets

WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")
TRUNCATED = base64.b64encode(assets.photo("coffee")[:4000]).decode()  # header fine, decoding fails


def _post_classify(base_url: str, image: str, request_id: str | None = None) -> requests.Response:
    headers = {"X-Request-ID": request_id} if request_id else {}
    return requests.post(f"{base_url}/v1/classify", json={"image": image}, headers=headers, timeout=60)


def _serve_logs(ray_cluster, prefix: str) -> list[Path]:
    logs = Path(ray_cluster["session_dir"]) / "logs" / "serve"
    return sorted(logs.glob(f"{prefix}*.log"))


def _lines_with(ray_cluster, prefix: str, text: str, wait_s: float = 15.0) -> list[str]:
    """The lines of the Serve logs named ``prefix*`` that hold ``text`` (logs are flushed a little late)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = [
            line
            for path in _serve_logs(ray_cluster, prefix)
            for line in path.read_text(errors="replace").splitlines()
            if text in line
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_well_formed_client_id_is_echoed(base_url):
    r = requests.get(f"{base_url}/v1/models", headers={"X-Request-ID": "client-id_1.2:3"}, timeout=30)
    assert r.status_code == 200 and r.headers["x-request-id"] == "client-id_1.2:3"


def test_an_answer_without_a_client_id_gets_a_new_one(base_url):
    r = requests.get(f"{base_url}/v1/models", timeout=30)
    assert WELL_FORMED.fullmatch(r.headers["x-request-id"])


@pytest.mark.parametrize(
    "hostile",
    [b"a" * 10_000, "caf\u00e9-\u00fc".encode("latin-1"), b"x" * 129, b"a b", b"<script>", b"id;drop"],
    ids=["10KB", "non-ASCII", "129 chars", "space", "markup", "semicolon"],
)
def test_a_hostile_client_id_is_replaced(base_url, hostile):
    r = requests.get(f"{base_url}/v1/models", headers={"X-Request-ID": hostile}, timeout=30)
    assert r.status_code == 200
    assert r.headers["x-request-id"].encode("latin-1") != hostile
    assert WELL_FORMED.fullmatch(r.headers["x-request-id"]), r.headers["x-request-id"][:200]


def test_an_error_carries_the_id_in_body_and_header(base_url):
    r = _post_classify(base_url, TRUNCATED, "err-body-1")
    assert r.status_code == 400, r.text
    assert r.headers["x-request-id"] == "err-body-1"
    assert r.json()["error"]["request_id"] == "err-body-1"


def test_an_error_without_a_client_id_carries_the_new_one(base_url):
    r = requests.post(f"{base_url}/v1/nothing-here", json={}, timeout=30)
    assert r.status_code == 404
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


def test_the_replica_logs_the_id_of_a_failing_request(base_url, ray_cluster):
    # an image to embed crosses as bytes (image_transport: bytes): VisionEncoder decodes it, and fails
    r = requests.post(
        f"{base_url}/v1/embeddings/image",
        json={"images": [TRUNCATED]},
        headers={"X-Request-ID": "replica-log-7f3a"},
        timeout=60,
    )
    assert r.status_code == 400 and r.json()["error"]["request_id"] == "replica-log-7f3a"
    lines = _lines_with(ray_cluster, "replica_mmserve_VisionEncoder", "replica-log-7f3a")
    assert lines, _lines_with(ray_cluster, "replica_", "replica-log-7f3a", wait_s=0) + [
        p.read_text()[-3000:] for p in _serve_logs(ray_cluster, "replica_mmserve_VisionEncoder")
    ]
    assert any("ERROR" in line for line in lines), lines


def test_a_batch_logs_the_ids_of_its_requests(base_url, ray_cluster):
    image = base64.b64encode(assets.photo("chelsea")).decode()
    assert _post_classify(base_url, image, "batch-log-91c2").status_code == 200
    lines = _lines_with(ray_cluster, "replica_mmserve_VisionEncoder", "batch-log-91c2")
    assert any("a batch of" in line for line in lines), lines


def test_the_compose_response_carries_the_id(base_url):
    body = {"tasks": [{"type": "embed", "modality": "text"}], "inputs": {"text": "a cat"}}
    r = requests.post(f"{base_url}/v1/compose", json=body, headers={"X-Request-ID": "compose-1"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["request_id"] == "compose-1" == r.headers["x-request-id"]


def test_the_client_error_names_the_request_id(client):
    with pytest.raises(MMServeError) as err:
        client.zero_shot(assets.photo("chelsea"), [])
    assert WELL_FORMED.fullmatch(err.value.request_id or "")
    assert f"request id: {err.value.request_id}" in str(err.value)
