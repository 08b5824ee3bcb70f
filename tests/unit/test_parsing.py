"""What the parsing boundary refuses before any schema or replica sees it (issue 22): text that
cannot be encoded as UTF-8 anywhere in a body, integers over 64 bits; and the schema-level checks
for prompt templates and integer fields (booleans are not numbers)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from api import schemas as s
from deployments.gateway.parsing import _validate_form, _validate_json
from models.errors import InvalidInput

WAV = s.encode_media(b"RIFF....WAVE")


def _refused(raw: str, schema=s.TranscriptionRequest) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        _validate_json(raw.encode(), schema)
    return caught.value


@pytest.mark.parametrize(
    "raw, schema, param",
    [
        ('{"file": "%s", "language": "\\ud800"}' % WAV, s.TranscriptionRequest, "language"),
        ('{"file": "%s", "prompt": "ok \\udfff then"}' % WAV, s.TranscriptionRequest, "prompt"),
        (
            '{"inputs": {"audio": "%s"}, "tasks": [{"type": "transcribe", "language": "\\ud800"}]}' % WAV,
            s.ComposeRequest,
            "tasks.0.language",
        ),
        ('{"input": "a", "model": "\\ud800"}', s.OpenAIEmbeddingRequest, "model"),
        ('{"image": "aGk=", "labels": ["cat", "d\\udc00g"]}', s.ZeroShotRequest, "labels.1"),
        ('{"image": "aGk=", "labels": ["cat"], "template": "{} \\ud800"}', s.ZeroShotRequest, "template"),
        (
            '{"items": [{"image": "aGk=", "metadata": {"title": "\\ud800"}}]}',
            s.AddItemsRequest,
            "items.0.metadata.title",
        ),
        (
            '{"items": [{"image": "aGk=", "metadata": {"t\\ud800": "x"}}]}',
            s.AddItemsRequest,
            "items.0.metadata",
        ),
        ('{"text": "cat", "where": {"tag": "\\udbff"}}', s.QueryRequest, "where.tag"),
        ('{"texts": ["fine", "\\ud800\\ud800"]}', s.TextEmbedRequest, "texts.1"),
    ],
)
def test_a_lone_surrogate_anywhere_is_refused_with_its_path(raw, schema, param):
    err = _refused(raw, schema)
    assert err.param == param
    assert "UTF-8" in err.message
    err.message.encode("utf-8")  # the error itself is safe to send


def test_a_surrogate_pair_is_a_character_not_an_error():
    body = _validate_json(b'{"texts": ["\\ud83d\\ude00 ok", "caf\\u00e9"]}', s.TextEmbedRequest)
    assert body.texts == ["\U0001f600 ok", "caf\u00e9"]


@pytest.mark.parametrize(
    "raw, schema, param",
    [
        ('{"image": "aGk=", "top_k": %s}' % ("9" * 4301), s.ClassifyRequest, "top_k"),
        ('{"image": "aGk=", "top_k": -%s}' % ("9" * 4301), s.ClassifyRequest, "top_k"),
        (
            '{"items": [{"image": "aGk=", "metadata": {"n": %s}}]}' % ("1" * 4301),
            s.AddItemsRequest,
            "items.0.metadata.n",
        ),
        ('{"text": "cat", "where": {"n": 9223372036854775808}}', s.QueryRequest, "where.n"),
        (
            '{"input": "a", "model": "m", "dimensions": %s}' % ("7" * 5000),
            s.OpenAIEmbeddingRequest,
            "dimensions",
        ),
        (
            '{"inputs": {"text": "a"}, "tasks": [{"type": "classify", "top_k": %s}]}' % ("1" * 4301),
            s.ComposeRequest,
            "tasks.0.top_k",
        ),
    ],
)
def test_integers_over_64_bits_are_refused_with_their_path(raw, schema, param):
    err = _refused(raw, schema)
    assert err.param == param and "64 bits" in err.message


def test_64_bit_integers_still_parse():
    body = _validate_json(
        b'{"text": "a", "where": {"lo": -9223372036854775808, "hi": 9223372036854775807}}', s.QueryRequest
    )
    assert body.where == {"lo": -(2**63), "hi": 2**63 - 1}


def test_multipart_fields_are_checked_too():
    """A multipart part decoded with the charset the body names (``unicode_escape`` or ``utf-7`` give
    lone surrogates) reaches the same check; file parts are bytes and pass untouched."""
    with pytest.raises(InvalidInput) as caught:
        _validate_form({"file": b"\xed\xa0\x80", "language": "\ud800"}, s.TranscriptionRequest)
    assert caught.value.param == "language"
    assert (
        _validate_form({"file": b"\xed\xa0\x80", "language": "en"}, s.TranscriptionRequest).language == "en"
    )


BAD_TEMPLATES = [
    "{} {",
    "{}{}",
    "{} {x}",
    "{}{0.nope}",
    "{{}}{0:.>1000000}",
    "{0}",
    "{:>9999}",
    "{!r}",
    "{}}",
    "no slot",
    "{{}}",
]


@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_templates_are_one_bare_placeholder(template):
    with pytest.raises(s.TemplateError):
        s.check_template(template)


@pytest.mark.parametrize("template", ["a photo of a {}", "{}", "{{braces}} around {}", "{} {{}}"])
def test_good_templates_pass(template):
    assert s.check_template(template) == template


def test_template_and_label_lengths_keep_every_prompt_within_the_text_cap():
    longest = s.ZeroShotRequest(
        image=b"x", labels=["l" * s.MAX_LABEL_CHARS], template="t" * (s.MAX_TEMPLATE_CHARS - 2) + "{}"
    )
    assert len(longest.template.format(longest.labels[0])) <= s.MAX_TEXT_CHARS
    with pytest.raises(ValidationError):
        s.ZeroShotRequest(image=b"x", labels=["l" * (s.MAX_LABEL_CHARS + 1)])
    with pytest.raises(ValidationError):
        s.ZeroShotRequest(image=b"x", labels=["l"], template="t" * s.MAX_TEMPLATE_CHARS + "{}")


@pytest.mark.parametrize(
    "schema, body, field",
    [
        (s.ClassifyRequest, {"image": "aGk=", "top_k": True}, "top_k"),
        (s.RetrievalRequest, {"images": ["aGk="], "texts": ["a"], "top_k": False}, "top_k"),
        (s.QueryRequest, {"text": "a", "top_k": True}, "top_k"),
        (s.CaptionRequest, {"image": "aGk=", "max_tokens": True}, "max_tokens"),
        (s.VQARequest, {"image": "aGk=", "question": "q", "num_beams": True}, "num_beams"),
        (s.OpenAIEmbeddingRequest, {"input": "a", "model": "m", "dimensions": True}, "dimensions"),
        (s.TranscriptionRequest, {"file": "aGk=", "temperature": True}, "temperature"),
        (s.ChatCompletionRequest, {"model": "m", "messages": [{"role": "user"}], "n": True}, "n"),
    ],
)
def test_booleans_are_not_numbers(schema, body, field):
    with pytest.raises(ValidationError) as caught:
        schema.model_validate(body)
    assert caught.value.errors()[0]["loc"][0] == field


def test_form_fields_still_convert_from_text():
    assert s.ClassifyRequest.model_validate({"image": b"x", "top_k": "3"}).top_k == 3
    assert s.TranscriptionRequest.model_validate({"file": b"x", "temperature": "0.5"}).temperature == 0.5


def test_domain_errors_escape_what_utf_8_cannot_carry():
    err = InvalidInput("language '\ud800' is not supported", param="lang\udc00")
    assert err.message == "language '\\ud800' is not supported" and err.param == "lang\\udc00"
    str(err).encode("utf-8")
    json.dumps({"m": err.message}, ensure_ascii=False).encode("utf-8")
