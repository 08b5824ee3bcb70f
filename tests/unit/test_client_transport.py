"""The client sends images the cheapest way the server takes them (issue 24 #2): one image as the
raw ``application/octet-stream`` body, several as multipart file parts; never base64 in JSON."""

from __future__ import annotations

import json

import httpx
import pytest

from clients.client import Client

EMBEDDING = {"model": "m", "space": "s", "dim": 1, "data": [{"index": 0, "embedding": [0.5]}]}
ANSWERS = {
    "/v1/embeddings/image": EMBEDDING,
    "/v1/classify": {"model": "m", "predictions": [{"index": 1, "label": "cat", "score": 0.9}]},
    "/v1/zero-shot": {"model": "m", "labels": [{"label": "cat", "score": 1.0}]},
}


@pytest.fixture
def sent():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(200, json=ANSWERS[request.url.path])

    client = Client("http://test")
    client._http = httpx.Client(base_url="http://test", transport=httpx.MockTransport(answer))
    with client:
        yield client, seen


def _type(request: httpx.Request) -> str:
    return request.headers["content-type"].split(";")[0]


def test_one_image_goes_as_the_raw_body(sent):
    client, seen = sent
    client.embed_images([b"JPEGBYTES"])
    client.classify(b"JPEGBYTES", top_k=3)
    assert [_type(r) for r in seen] == ["application/octet-stream"] * 2
    assert [r.content for r in seen] == [b"JPEGBYTES"] * 2
    assert dict(seen[1].url.params) == {"top_k": "3"}


def test_several_images_and_zero_shot_go_as_file_parts(sent):
    client, seen = sent
    client.embed_images([b"ONE", b"TWO"])
    client.zero_shot(b"JPEGBYTES", ["cat", "dog"])
    assert [_type(r) for r in seen] == ["multipart/form-data"] * 2
    body = seen[0].content
    assert b'name="images"' in body and b"ONE" in body and b"TWO" in body
    assert body.count(b'name="labels"') == 0 and seen[1].content.count(b'name="labels"') == 2
    for request in seen:
        with pytest.raises(json.JSONDecodeError):
            json.loads(request.content)  # no JSON (and so no base64) anywhere
