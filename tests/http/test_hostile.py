"""The bad-input corpus over real HTTP: every hostile input gets its 4xx in the one error shape (or
the right answer), and no replica is restarted by any of them.

Media cases come from ``tests/hostile_media.py`` (also run through the decoders in the unit tests);
JSON, path and framing cases are listed here. Framing cases go over a raw socket to loopback."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest
import ray

from api.schemas import encode_media
from tests.assets import photo
from tests.chaos.load import wav
from tests.hostile_media import CASES

IMAGE_ROUTE, AUDIO_ROUTE = "/v1/classify", "/v1/audio/features"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_dict(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


JSON_CASES = [  # (name, route, raw JSON body, status, param or None)
    ("classify-nested-2000", "/v1/classify", '{"image": %s}' % _nested(2000), 400, None),
    (
        "classify-nested-object-2000",
        "/v1/classify",
        '{"image": "x", "top_k": %s}' % _deep_dict(2000),
        400,
        None,
    ),
    (
        "query-where-nested-2000",
        "/v1/indexes/hostile/query",
        '{"text": "cat", "where": %s}' % _deep_dict(2000),
        400,
        None,
    ),
    (
        "compose-nested-2000",
        "/v1/compose",
        '{"inputs": {"text": "a"}, "tasks": %s}' % _nested(2000),
        400,
        None,
    ),
    ("not-json", "/v1/classify", "{not json", 400, None),
    ("json-array", "/v1/classify", "[1, 2]", 400, None),
    ("bad-base64", "/v1/classify", '{"image": "!!!not base64"}', 400, "image"),
    ("bad-base64-list", "/v1/embeddings/image", '{"images": ["%%%%"]}', 400, "images.0"),
    (
        "bad-base64-openai",
        "/v1/embeddings",
        '{"model": "conse-efficientnet-lite0", "input": "%%%%"}',
        400,
        "input[0]",
    ),
    ("unknown-field", "/v1/classify", '{"image": "aGk=", "colour": 1}', 422, "colour"),
    ("top-k-zero", "/v1/classify", '{"image": "aGk=", "top_k": 0}', 422, "top_k"),
    (
        "openai-text-too-long",
        "/v1/embeddings",
        json.dumps({"model": "all-MiniLM-L6-v2", "input": "a" * 20_001}),
        400,
        "input[0]",
    ),
    ("texts-too-long", "/v1/embeddings/text", json.dumps({"texts": ["a" * 10_001]}), 422, "texts.0"),
    (
        "zero-shot-no-placeholder",
        "/v1/zero-shot",
        json.dumps({"image": encode_media(b"x"), "labels": ["cat"], "template": "no slot"}),
        400,
        "template",
    ),
    (
        "compose-unknown-task",
        "/v1/compose",
        '{"inputs": {"text": "a"}, "tasks": [{"type": "dance"}]}',
        422,
        None,
    ),
    (
        "compose-missing-input",
        "/v1/compose",
        '{"inputs": {"text": "a"}, "tasks": [{"type": "classify"}]}',
        400,
        "inputs.image",
    ),
    (
        "index-path-nul",
        "/v1/indexes/hostile/items",
        '{"items": [{"path": "a\\u0000b.jpg"}]}',
        403,
        "items[0]",
    ),
    ("index-bad-name", "/v1/indexes", '{"name": "Bad Name"}', 422, "name"),
]

# Issue 22. json.dumps writes a lone surrogate as its \uXXXX escape, as an attacker would.
WAV, IMG, BIG = encode_media(wav(0.5)), encode_media(photo("chelsea")), "9" * 4301
TRANSCRIBE, ZERO_SHOT, COMPOSE = "/v1/audio/transcriptions", "/v1/zero-shot", "/v1/compose"
ITEMS, QUERY = "/v1/indexes/hostile/items", "/v1/indexes/hostile/query"


def _zero_shot(**fields) -> str:
    return json.dumps({"image": IMG, "labels": ["cat", "dog"], **fields})


def _compose(task: dict, inputs: dict | None = None) -> str:
    return json.dumps({"inputs": inputs or {"audio": WAV}, "tasks": [task]})


SURROGATE_CASES = [
    ("language-surrogate", TRANSCRIBE, json.dumps({"file": WAV, "language": "\ud800"}), 400, "language"),
    (
        "language-low-surrogate",
        TRANSCRIBE,
        json.dumps({"file": WAV, "language": "e\udc00n"}),
        400,
        "language",
    ),
    ("prompt-surrogate", TRANSCRIBE, json.dumps({"file": WAV, "prompt": "hello \udbff"}), 400, "prompt"),
    (
        "translation-prompt-surrogate",
        "/v1/audio/translations",
        json.dumps({"file": WAV, "prompt": "\ud800"}),
        400,
        "prompt",
    ),
    (
        "compose-transcribe-language",
        COMPOSE,
        _compose({"type": "transcribe", "language": "\ud800"}),
        400,
        "tasks.0.language",
    ),
    (
        "compose-second-task-language",
        COMPOSE,
        json.dumps(
            {
                "inputs": {"audio": WAV},
                "tasks": [{"type": "language"}, {"type": "transcribe", "language": "\udfff"}],
            }
        ),
        400,
        "tasks.1.language",
    ),
    (
        "compose-text-input",
        COMPOSE,
        _compose({"type": "embed", "modality": "text"}, {"text": "a\ud800"}),
        400,
        "inputs.text",
    ),
    ("openai-model-surrogate", "/v1/embeddings", json.dumps({"model": "\ud800", "input": "a"}), 400, "model"),
    (
        "openai-input-surrogate",
        "/v1/embeddings",
        json.dumps({"model": "all-MiniLM-L6-v2", "input": ["ok", "\ud800"]}),
        400,
        "input.1",
    ),
    ("texts-surrogate", "/v1/embeddings/text", json.dumps({"texts": ["\ud800"]}), 400, "texts.0"),
    ("template-surrogate", ZERO_SHOT, _zero_shot(template="a {} \ud800"), 400, "template"),
    ("label-surrogate", ZERO_SHOT, _zero_shot(labels=["cat", "\udc80"]), 400, "labels.1"),
    (
        "compose-label-surrogate",
        COMPOSE,
        _compose({"type": "zero_shot", "labels": ["\ud800"]}, {"image": IMG}),
        400,
        "tasks.0.labels.0",
    ),
    (
        "metadata-value-surrogate",
        ITEMS,
        json.dumps({"items": [{"image": IMG, "metadata": {"title": "\ud800"}}]}),
        400,
        "items.0.metadata.title",
    ),
    (
        "metadata-key-surrogate",
        ITEMS,
        json.dumps({"items": [{"image": IMG, "metadata": {"t\ud800": "x"}}]}),
        400,
        "items.0.metadata",
    ),
    ("where-surrogate", QUERY, json.dumps({"text": "cat", "where": {"tag": "\ud800"}}), 400, "where.tag"),
    ("where-key-surrogate", QUERY, json.dumps({"text": "cat", "where": {"\ud800": 1}}), 400, "where"),
    (
        "compose-search-where",
        COMPOSE,
        _compose({"type": "search", "index": "hostile", "where": {"tag": "\ud800"}}, {"text": "cat"}),
        400,
        "tasks.0.where.tag",
    ),
    ("unknown-field-name-surrogate", "/v1/classify", json.dumps({"image": IMG, "\ud800": 1}), 400, None),
]
BIG_INT_CASES = [
    ("top-k-4301-digits", "/v1/classify", '{"image": "%s", "top_k": %s}' % (IMG, BIG), 400, "top_k"),
    (
        "top-k-negative-4301-digits",
        "/v1/classify",
        '{"image": "%s", "top_k": -%s}' % (IMG, BIG),
        400,
        "top_k",
    ),
    (
        "unknown-field-4301-digits",
        "/v1/classify",
        '{"image": "%s", "colour": %s}' % (IMG, BIG),
        400,
        "colour",
    ),
    (
        "metadata-4301-digits",
        ITEMS,
        '{"items": [{"image": "%s", "metadata": {"n": %s}}]}' % (IMG, BIG),
        400,
        "items.0.metadata.n",
    ),
    (
        "metadata-over-int64",
        ITEMS,
        '{"items": [{"image": "%s", "metadata": {"n": 9223372036854775808}}]}' % IMG,
        400,
        "items.0.metadata.n",
    ),
    ("where-4301-digits", QUERY, '{"text": "cat", "where": {"n": %s}}' % BIG, 400, "where.n"),
    (
        "openai-dimensions-4301-digits",
        "/v1/embeddings",
        '{"model": "all-MiniLM-L6-v2", "input": "a", "dimensions": %s}' % BIG,
        400,
        "dimensions",
    ),
    (
        "compose-top-k-4301-digits",
        COMPOSE,
        '{"inputs": {"image": "%s"}, "tasks": [{"type": "classify", "top_k": %s}]}' % (IMG, BIG),
        400,
        "tasks.0.top_k",
    ),
    ("big-int-in-a-list", "/v1/embeddings/text", '{"texts": ["a", %s]}' % BIG, 400, "texts.1"),
]
TEMPLATE_CASES = [
    (f"template-{n}", ZERO_SHOT, _zero_shot(template=t), 400, "template")
    for n, t in enumerate(
        [
            "{} {",
            "{}{}",
            "{} {x}",
            "{}{0.nope}",
            "{{}}{0:.>1000000}",
            "{0}",
            "{:>9999}",
            "{!r}",
            "{{}}",
            "x" * 300 + "{}",
        ]
    )
]
TEMPLATE_CASES[-1] = ("template-too-long", ZERO_SHOT, _zero_shot(template="x" * 300 + "{}"), 422, "template")
TEMPLATE_CASES += [
    (
        "compose-template-padding",
        COMPOSE,
        _compose({"type": "zero_shot", "labels": ["cat"], "template": "{{}}{0:.>1000000}"}, {"image": IMG}),
        400,
        "tasks.0.zero_shot.template",
    ),
    ("label-over-its-cap", ZERO_SHOT, _zero_shot(labels=["l" * 9745]), 422, "labels.0"),
]
BOOL_CASES = [
    ("top-k-true", "/v1/classify", json.dumps({"image": IMG, "top_k": True}), 422, "top_k"),
    (
        "top-k-false-retrieval",
        "/v1/retrieval",
        json.dumps({"images": [IMG], "texts": ["a"], "top_k": False}),
        422,
        "top_k",
    ),
    ("query-top-k-true", QUERY, json.dumps({"text": "cat", "top_k": True}), 422, "top_k"),
    (
        "compose-top-k-true",
        COMPOSE,
        _compose({"type": "classify", "top_k": True}, {"image": IMG}),
        422,
        "tasks.0.classify.top_k",
    ),
    ("temperature-true", TRANSCRIBE, json.dumps({"file": WAV, "temperature": True}), 422, "temperature"),
    (
        "dimensions-true",
        "/v1/embeddings",
        json.dumps({"model": "all-MiniLM-L6-v2", "input": "a", "dimensions": True}),
        422,
        "dimensions",
    ),
]
JSON_CASES += SURROGATE_CASES + BIG_INT_CASES + TEMPLATE_CASES + BOOL_CASES


def _shape_ok(body: dict) -> None:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "message", "param", "request_id"}, body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]


def _replicas() -> set[str]:
    """The named replica actors of the session's app: a restarted replica comes back under a new name."""
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    return {n for n in names if "SERVE_REPLICA::mmserve#" in n}


@pytest.fixture(scope="module")
def before(served, base_url):
    httpx.post(f"{base_url}/v1/indexes", json={"name": "hostile"}, timeout=60)
    replicas = _replicas()
    assert len(replicas) >= 5, replicas  # gateway, three encoders, search, fusion
    return replicas


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}-{c.name}" for c in CASES])
def test_hostile_media(base_url, before, case):
    route, field = (IMAGE_ROUTE, "image") if case.kind == "image" else (AUDIO_ROUTE, "audio")
    body = {field: encode_media(case.data)} if case.data else {field: ""}
    r = httpx.post(f"{base_url}{route}", json=body, timeout=120)
    assert r.status_code == case.status, (case.name, r.status_code, r.text[:300])
    if case.status != 200:
        _shape_ok(r.json())
        assert r.json()["error"]["param"] == field


DECODED_IMAGES = [c for c in CASES if c.kind == "image" and c.data]  # an empty one fails validation first


@pytest.mark.parametrize("case", DECODED_IMAGES, ids=[f"embed-{c.name}" for c in DECODED_IMAGES])
def test_hostile_image_to_embed(base_url, before, case):
    """The embedding route sends images as ``gateway.settings.image_transport`` says (the replica may
    decode them): the same status and error shape as classify, whose gateway decodes them."""
    r = httpx.post(f"{base_url}/v1/embeddings/image", json={"images": [encode_media(case.data)]}, timeout=120)
    assert r.status_code == case.status, (case.name, r.status_code, r.text[:300])
    if case.status != 200:
        _shape_ok(r.json())
        gateway = httpx.post(
            f"{base_url}{IMAGE_ROUTE}", json={"image": encode_media(case.data)}, timeout=120
        ).json()
        error = r.json()["error"]
        assert error["param"] == "images[0]"
        assert (error["type"], error["message"].replace("'images[0]'", "'image'")) == (
            gateway["error"]["type"],
            gateway["error"]["message"],
        )


@pytest.mark.parametrize("name, route, raw, status, param", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_hostile_json(base_url, before, name, route, raw, status, param):
    r = httpx.post(
        f"{base_url}{route}", content=raw.encode(), headers={"content-type": "application/json"}, timeout=60
    )
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    _shape_ok(r.json())
    if param is not None:
        assert r.json()["error"]["param"] == param, r.json()


def _raw_http(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """What the server answered (b"" when it dropped the connection without a response)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)  # no half-close: the proxy takes that for a client that left
            while not _complete(answer) and (chunk := sock.recv(65536)):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return answer


def _complete(answer: bytes) -> bool:
    """Whether the head and the Content-Length bytes of the body have arrived."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return length is None or len(body) >= int(length.group(1))


FRAMING_CASES = [  # (name, raw request, the status line must start with one of these)
    (
        "content-length-and-chunked",
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        (b"HTTP/1.1 400",),
    ),
    (
        "negative-content-length",
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -5\r\n\r\n{}",
        (b"HTTP/1.1 400",),
    ),
    (
        "bare-lf",
        b"POST /v1/classify HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 2\n\n{}",
        (b"HTTP/1.1 400", b"HTTP/1.1 422"),
    ),
    (
        "header-over-the-limit",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 48_000 + b"\r\n\r\n",
        (b"HTTP/1.1 431",),
    ),
    (
        "header-of-8mb",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8_000_000 + b"\r\n\r\n",
        (b"HTTP/1.1 431",),
    ),
    (
        "content-length-over-cap",
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 999999999999\r\n\r\n",
        (b"HTTP/1.1 413",),
    ),
]


@pytest.mark.parametrize("name, raw, allowed", FRAMING_CASES, ids=[c[0] for c in FRAMING_CASES])
def test_malformed_http_is_refused(served, base_url, before, name, raw, allowed):
    port = int(base_url.rsplit(":", 1)[1])
    answer = _raw_http(port, raw)
    assert answer.startswith(allowed), (name, answer[:200])
    head, _, body = answer.partition(b"\r\n\r\n")
    error = json.loads(body)["error"]  # uvicorn's own 400 and the gateway's refusals alike
    _shape_ok({"error": error})
    assert re.search(rb"(?im)^x-request-id: " + error["request_id"].encode() + rb"\r?$", head), head


def _multipart(fields: dict[str, bytes], charset: str) -> tuple[bytes, str]:
    """A multipart body by hand (httpx would not send what these cases send)."""
    boundary = "hostile22"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        + (b'; filename="a.wav"\r\nContent-Type: audio/wav' if name == "file" else b"")
        + b"\r\n\r\n"
        + value
        + b"\r\n"
        for name, value in fields.items()
    ]
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}; charset={charset}"


MULTIPART_CASES = [  # (name, language part, charset the body claims): both decode to a lone surrogate
    ("unicode-escape", b"\\ud800", "unicode_escape"),
    ("utf-7", b"+2AA-", "utf-7"),
]


@pytest.mark.parametrize("name, language, charset", MULTIPART_CASES, ids=[c[0] for c in MULTIPART_CASES])
def test_hostile_multipart_language(base_url, before, name, language, charset):
    body, content_type = _multipart({"file": wav(0.5), "language": language}, charset)
    r = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        content=body,
        headers={"content-type": content_type},
        timeout=60,
    )
    assert r.status_code == 400, (name, r.status_code, r.text[:300])
    _shape_ok(r.json())
    assert r.json()["error"]["param"] == "language"


def test_a_good_request_still_works_and_no_replica_restarted(base_url, before):
    r = httpx.post(
        f"{base_url}/v1/classify", json={"image": encode_media(photo("chelsea")), "top_k": 1}, timeout=60
    )
    assert r.status_code == 200 and "cat" in r.json()["predictions"][0]["label"]
    heard = httpx.post(
        f"{base_url}/v1/audio/transcriptions", json={"file": WAV, "language": "en"}, timeout=120
    )
    assert heard.status_code == 200, heard.text[:300]  # AudioModel answers: none of the cases took it down
    assert _replicas() == before
