"""Images as raw ``application/octet-stream`` bodies against the served graph (issue 24 #2): the same
answer as JSON and multipart, and every hostile image refused with the status and error it gets as
base64 in JSON (sniffing, allow-list, pixel cap), the byte cap included."""

from __future__ import annotations

import http.client
from urllib.parse import urlparse

import httpx
import pytest

from api.schemas import encode_media
from tests.assets import photo
from tests.hostile_media import CASES

pytestmark = pytest.mark.slow
RAW = {"content-type": "application/octet-stream"}
IMAGES = [c for c in CASES if c.kind == "image" and c.data]


def test_a_raw_image_embeds_as_json_and_multipart_do(base_url):
    cat = photo("chelsea")
    url = f"{base_url}/v1/embeddings/image"
    raw = httpx.post(url, content=cat, headers=RAW, timeout=120)
    as_json = httpx.post(url, json={"images": [encode_media(cat)]}, timeout=120)
    parts = httpx.post(url, files={"images": ("cat.jpg", cat)}, timeout=120)
    assert raw.status_code == as_json.status_code == parts.status_code == 200, raw.text[:300]
    assert raw.json() == as_json.json() == parts.json()
    top = httpx.post(f"{base_url}/v1/classify", params={"top_k": 2}, content=cat, headers=RAW, timeout=120)
    assert top.status_code == 200 and len(top.json()["predictions"]) == 2


def _without_id(error: dict) -> dict:
    """An error body without its request id (each request has its own)."""
    return {k: v for k, v in error.items() if k != "request_id"}


def test_every_hostile_image_is_refused_as_in_json(base_url):
    for case in IMAGES:
        for route, field in (("/v1/classify", "image"), ("/v1/embeddings/image", "images")):
            raw = httpx.post(f"{base_url}{route}", content=case.data, headers=RAW, timeout=120)
            body = {field: encode_media(case.data) if field == "image" else [encode_media(case.data)]}
            as_json = httpx.post(f"{base_url}{route}", json=body, timeout=120)
            assert raw.status_code == as_json.status_code == case.status, (case.name, route, raw.text[:300])
            if case.status != 200:
                assert _without_id(raw.json()["error"]) == _without_id(as_json.json()["error"]), (
                    case.name,
                    route,
                )


def test_a_raw_body_over_the_byte_cap_is_413_before_it_is_read(base_url):
    url = urlparse(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.putrequest("POST", "/v1/classify")
    conn.putheader("content-type", "application/octet-stream")
    conn.putheader("content-length", str(100_000_000))
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 413 and b"payload_too_large" in answer.read()
    conn.close()
