import base64

import pytest
from pydantic import ValidationError

from api import schemas as s
from models.speech import Segment
from models.subtitles import to_srt, to_vtt


def test_media_accepts_base64_data_url_and_bytes():
    raw = b"\x89PNG fake"
    b64 = base64.b64encode(raw).decode()
    assert s.ClassifyRequest(image=b64).image == raw
    assert s.ClassifyRequest(image=f"data:image/png;base64,{b64}").image == raw
    assert s.ClassifyRequest(image=raw).image == raw


@pytest.mark.parametrize("bad", ["%%%not base64%%%", "", 12])
def test_media_rejects_bad_values(bad):
    with pytest.raises(ValidationError):
        s.ClassifyRequest(image=bad)


def test_empty_labels_rejected():
    with pytest.raises(ValidationError):
        s.ZeroShotRequest(image=b"x", labels=[])


def test_unknown_fields_rejected():
    with pytest.raises(ValidationError):
        s.TextEmbedRequest(texts=["a"], surprise=1)


def test_srt_and_vtt():
    segs = [
        Segment(id=0, start=0.0, end=1.5, text="hello"),
        Segment(id=1, start=61.25, end=3725.0, text="world"),
    ]
    srt = to_srt(segs)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\nhello\n")
    assert "2\n00:01:01,250 --> 01:02:05,000\nworld" in srt
    vtt = to_vtt(segs)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nhello")


def test_form_parts_named_like_the_openai_client_fill_list_fields():
    """The openai client sends ``timestamp_granularities[]`` parts; they fill the list field."""
    import asyncio

    from starlette.datastructures import FormData

    from deployments.gateway.parsing import _form

    form = FormData(
        [
            ("file", b"RIFF"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
            ("timestamp_granularities[]", "segment"),
        ]
    )
    request = s.TranscriptionRequest.model_validate(asyncio.run(_form(form, s.TranscriptionRequest)))
    assert request.timestamp_granularities == ["word", "segment"] and request.word_timestamps()
    two = asyncio.run(_form(FormData([("images", b"GIF89a"), ("images", b"\x89PNG")]), s.CaptionRequest))
    assert s.CaptionRequest.model_validate(two).images == [b"GIF89a", b"\x89PNG"]  # an optional list field
    plain = s.TranscriptionRequest.model_validate({"file": "UklGRg=="})
    assert plain.timestamp_granularities == ["segment"] and not plain.word_timestamps()
    with pytest.raises(ValidationError):
        s.TranscriptionRequest.model_validate({"file": "UklGRg==", "timestamp_granularities": ["letter"]})
