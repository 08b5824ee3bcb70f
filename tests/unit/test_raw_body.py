"""An image as an ``application/octet-stream`` body on the image routes (issue 24 #2): the body is the
media field, the query gives the other fields, and the schema checks both as for multipart."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import pytest
from fastapi.routing import iter_route_contexts
from pydantic import ValidationError
from starlette.requests import Request

from api import schemas as s
from deployments.gateway import parsing
from deployments.gateway.app import create_app
from models.errors import UnsupportedMedia

JPEG = b"\xff\xd8\xff\xe0 not really a jpeg"


def _request(body: bytes, query: list[tuple[str, str]] = (), content_type: str = parsing.RAW_TYPE) -> Request:
    chunks = [body]

    async def receive() -> dict:
        return {"type": "http.request", "body": chunks.pop() if chunks else b"", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": urlencode(list(query)).encode(),
        "headers": [(b"content-type", content_type.encode())],
    }
    return Request(scope, receive)


RAW = {s.ClassifyRequest: "image", s.ZeroShotRequest: "image", s.ImageEmbedRequest: "images"}


def _parse(schema, body: bytes, query=(), content_type: str = parsing.RAW_TYPE):
    request = _request(body, query, content_type)
    return asyncio.run(parsing.parse_body(request, schema, RAW.get(schema)))


def test_the_image_routes_take_raw_bytes():
    contexts = iter_route_contexts(create_app().routes)
    raw = {c.path: c.original_route.raw for c in contexts if getattr(c.original_route, "raw", None)}
    assert raw == {"/v1/classify": "image", "/v1/zero-shot": "image", "/v1/embeddings/image": "images"}


def test_the_body_is_the_media_field_and_the_query_the_others():
    assert _parse(s.ImageEmbedRequest, JPEG).images == [JPEG]
    classify = _parse(s.ClassifyRequest, JPEG, [("top_k", "3")])
    assert (classify.image, classify.top_k) == (JPEG, 3)
    zero = _parse(s.ZeroShotRequest, JPEG, [("labels", "cat"), ("labels", "dog"), ("template", "a {}")])
    assert (zero.image, zero.labels, zero.template) == (JPEG, ["cat", "dog"], "a {}")


@pytest.mark.parametrize(
    "schema, body, query",
    [
        (s.ClassifyRequest, b"", []),  # empty media
        (s.ClassifyRequest, JPEG, [("top_k", "0")]),  # out of range, as in JSON
        (s.ClassifyRequest, JPEG, [("top_k", "true")]),  # booleans are not numbers
        (s.ClassifyRequest, JPEG, [("nope", "1")]),  # unknown fields are refused
        (s.ZeroShotRequest, JPEG, []),  # a required field missing
        (s.ZeroShotRequest, JPEG, [("labels", "cat"), ("template", "{0:>999999}")]),
    ],
)
def test_the_schema_checks_a_raw_body_as_any_other(schema, body, query):
    with pytest.raises(ValidationError):
        _parse(schema, body, query)


@pytest.mark.parametrize("schema", [s.TextEmbedRequest, s.RetrievalRequest, s.AudioEmbedRequest])
def test_routes_without_a_raw_field_still_refuse_octet_stream(schema):
    with pytest.raises(UnsupportedMedia) as caught:
        _parse(schema, JPEG)
    assert "application/json or multipart/form-data" in caught.value.message


def test_the_refusal_names_octet_stream_where_a_route_takes_it():
    with pytest.raises(UnsupportedMedia) as caught:
        _parse(s.ClassifyRequest, JPEG, content_type="text/plain")
    assert parsing.RAW_TYPE in caught.value.message


def test_the_openapi_spec_documents_the_raw_body():
    paths = create_app().openapi()["paths"]
    for path in ("/v1/classify", "/v1/zero-shot", "/v1/embeddings/image"):
        assert parsing.RAW_TYPE in paths[path]["post"]["requestBody"]["content"], path
    assert parsing.RAW_TYPE not in paths["/v1/retrieval"]["post"]["requestBody"]["content"]
