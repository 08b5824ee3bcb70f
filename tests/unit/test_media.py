import gc
import io
import re
import sys

import numpy as np
import pytest
from PIL import Image

from models.errors import InvalidInput, MMServeError, PayloadTooLarge, UnsupportedMedia
from models import media
from models.image_input import Encoded, InputSize, for_replica
from models.media import SAMPLE_RATE, MediaLimits, decode_audio, decode_image
from tests import assets, hostile_media


def test_decode_image_rgb_and_downscaled():
    image = decode_image(assets.photo("chelsea"), limits=MediaLimits(max_image_side=200))
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert max(image.shape[:2]) <= 200


def test_grayscale_png_becomes_rgb():
    assert decode_image(assets.photo("camera", "PNG")).shape[2] == 3


def test_bomb_refused_from_header():
    with pytest.raises(PayloadTooLarge) as err:
        decode_image(assets.bomb_png(6000), limits=MediaLimits(max_image_pixels=10_000_000))
    assert "36000000" in err.value.message


def test_truncated_image_is_invalid():
    raw = assets.photo("coffee")
    with pytest.raises(InvalidInput):
        decode_image(raw[: len(raw) // 3])


def test_garbage_is_unsupported():
    with pytest.raises(UnsupportedMedia):
        decode_image(b"definitely not an image")


def test_decode_wav_resamples_to_16k_mono():
    audio = decode_audio(assets.speech("hello"))  # espeak writes 22.05 kHz
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.3 < audio.size / SAMPLE_RATE < 3


def test_audio_over_cap_refused_before_decoding():
    with pytest.raises(PayloadTooLarge) as err:
        decode_audio(assets.tone(12), limits=MediaLimits(max_audio_seconds=10))
    assert err.value.param == "file"


def test_undecodable_audio():
    with pytest.raises(UnsupportedMedia):
        decode_audio(b"RIFF....not really a wave file at all" * 10)


def test_bytes_cap():
    with pytest.raises(PayloadTooLarge):
        decode_image(b"x" * 2048, limits=MediaLimits(max_bytes=1024))


def test_image_roundtrip_keeps_content():
    pixels = np.zeros((32, 48, 3), dtype=np.uint8)
    pixels[:, :24] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    assert np.array_equal(decode_image(buf.getvalue()), pixels)


# ----------------------------------------------------------------------- hostile inputs
# Text that must never reach a caller: exception class names, errno codes, library internals.
_LEAKS = re.compile(r"[A-Za-z]+(Error|Exception)\b|Errno|errno|Traceback|object at 0x|<_io|tuple index|"
                    r"avcodec|libsndfile|returned -?\d+|image file is|cannot identify|Invalid data found")


@pytest.mark.parametrize("case", hostile_media.CASES, ids=lambda c: c.name)
def test_hostile_media(case):
    param = "upload"
    decode = decode_image if case.kind == "image" else decode_audio
    if case.expect == "ok":
        out = decode(case.data, param=param)
        if case.kind == "image":
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.size
        else:
            assert out.dtype == np.float32 and out.ndim == 1 and out.size
            assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
        return
    with pytest.raises(MMServeError) as err:
        decode(case.data, param=param)
    assert type(err.value).__name__ == case.expect, err.value.message
    assert err.value.param == param and err.value.message.startswith(f"'{param}' ")
    assert not _LEAKS.search(err.value.message), err.value.message
    assert case.says in err.value.message


def test_corpus_is_large_and_named_uniquely():
    names = [case.name for case in hostile_media.CASES]
    assert len(names) == len(set(names)) >= 25
    assert {case.expect for case in hostile_media.CASES} == set(hostile_media.STATUS)


def test_16bit_grey_png_scaled_to_8bit():
    ramp16 = hostile_media.gray16_gradient()  # 0..65535 across 256 columns
    assert Image.open(io.BytesIO(hostile_media.png_gray16())).mode == "I;16"
    decoded = decode_image(hostile_media.png_gray16())
    expected = np.linspace(0, 255, 256).round()
    assert decoded.shape == (*ramp16.shape, 3)
    assert np.abs(decoded[..., 0].astype(int) - expected[None, :]).max() <= 1
    assert (decoded[..., 0] == decoded[..., 2]).all()  # still grey


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_32bit_integer_and_float_images_scaled():
    ramp = decode_image(hostile_media.tiff_int32())[0, :, 0]  # 0..65535 stored as int32
    assert ramp[0] == 0 and ramp[-1] == 255 and (np.diff(ramp.astype(int)) >= 0).all()
    small = np.arange(0, 256, 4, dtype=np.int32).reshape(8, 8)  # 8-bit values stored as int32
    assert (decode_image(_encode(Image.fromarray(small), "TIFF"))[..., 1] == small).all()
    unit = decode_image(hostile_media.tiff_float())[0, :, 0]  # 0.0..1.0 floats
    assert unit[0] == 0 and unit[-1] == 255 and unit[32] in (129, 130)


def test_alpha_composited_on_white():
    logo = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # transparent black background
    logo.paste((200, 0, 0, 255), (4, 0, 8, 8))
    decoded = decode_image(_encode(logo))
    assert (decoded[:, :4] == 255).all() and (decoded[:, 4:] == (200, 0, 0)).all()
    palette = decode_image(hostile_media.png_palette_transparent())
    assert (palette[:, :16] == 255).all() and (palette[:, 16:] == (0, 0, 255)).all()
    la = decode_image(_encode(Image.new("LA", (4, 4), (0, 128))))  # black at half opacity
    assert np.abs(la.astype(int) - 127).max() <= 1


def test_cmyk_and_1bit_become_rgb():
    assert (np.abs(decode_image(hostile_media.jpeg_cmyk()).astype(int) - (255, 0, 0)) <= 2).all()
    bits = Image.new("1", (8, 8), 0)
    bits.paste(1, (0, 0, 4, 8))
    decoded = decode_image(_encode(bits))
    assert (decoded[:, :4] == 255).all() and (decoded[:, 4:] == 0).all()


def test_animated_gif_gives_first_frame():
    decoded = decode_image(hostile_media.gif_animated())
    assert decoded.shape == (30, 40, 3) and (decoded == (255, 0, 0)).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_refused(value):
    with pytest.raises(InvalidInput) as err:
        decode_audio(hostile_media.float_wav(hostile_media.with_value(value)), param="clip")
    assert err.value.param == "clip" and "NaN or infinite" in err.value.message


def test_loud_float_audio_scaled_to_full_scale_keeping_its_shape():
    loud = hostile_media.sine(amplitude=1000.0)
    decoded = decode_audio(hostile_media.float_wav(loud))
    assert np.abs(decoded).max() == pytest.approx(1.0)
    np.testing.assert_allclose(decoded, loud / np.abs(loud).max(), atol=1e-6)  # not clipped


def test_quiet_and_silent_audio_unchanged():
    quiet = hostile_media.sine(amplitude=0.01)
    np.testing.assert_allclose(decode_audio(hostile_media.float_wav(quiet)), quiet, atol=1e-7)
    silence = decode_audio(hostile_media.float_wav(np.zeros(8000, np.float32)))
    assert silence.size == 8000 and not silence.any()


def test_compressed_audio_stops_at_the_duration_cap(monkeypatch):
    raw = hostile_media.av_encoded("mp4", "aac")  # ~1 s: libsndfile cannot read MP4, so FFmpeg decodes it
    assert decode_audio(raw).size > 0.9 * SAMPLE_RATE
    refused_at = []
    check = media._check_duration
    monkeypatch.setattr(media, "_check_duration", lambda s, *a: refused_at.append(s) or check(s, *a))
    with pytest.raises(PayloadTooLarge) as err:
        decode_audio(raw, limits=MediaLimits(max_audio_seconds=0.25))
    assert err.value.param == "file"
    assert refused_at[-1] < 0.5  # decoding stopped soon after the cap, not at the end of the file


def test_corrupt_header_leaves_nothing_on_stderr(monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(InvalidInput):
        decode_audio(next(c for c in hostile_media.CASES if c.name == "audio-aiff-truncated-header").data)
    gc.collect()
    assert unraisable == []


def test_truncated_compressed_audio_keeps_what_was_decoded():
    raw = hostile_media.av_encoded("adts", "aac")
    whole, half = decode_audio(raw), decode_audio(raw[: len(raw) // 2])
    assert 0.3 * whole.size < half.size < 0.7 * whole.size
    np.testing.assert_allclose(half[:4000], whole[:4000], atol=1e-4)


def _through(transport: str, raw: bytes, param: str):
    """The gateway's side of ``transport``, then the replica's (``bytes`` decodes there)."""
    size = InputSize(resize=256, crop=224)
    sent = for_replica(raw, transport=transport, size=size, limits=MediaLimits(), param=param)
    return sent.decode(size) if isinstance(sent, Encoded) else sent


@pytest.mark.parametrize("transport", ["draft", "input", "bytes"])
@pytest.mark.parametrize("case", [c for c in hostile_media.CASES if c.kind == "image"], ids=lambda c: c.name)
def test_every_image_transport_refuses_alike(case, transport):
    """Whichever side decodes, a bad image gets the error ``decode_image`` gives (the one error shape),
    and ``bytes`` refuses what the header shows (pixel cap, unknown format) before it leaves the gateway."""
    if case.expect == "ok":
        assert _through(transport, case.data, "upload") is not None
        return
    with pytest.raises(MMServeError) as expected:
        decode_image(case.data, param="upload")
    with pytest.raises(MMServeError) as err:
        _through(transport, case.data, "upload")
    assert (type(err.value), err.value.message, err.value.param) == \
        (type(expected.value), expected.value.message, expected.value.param)
    if transport == "bytes" and case.expect in ("PayloadTooLarge", "UnsupportedMedia"):
        with pytest.raises(type(expected.value)):
            for_replica(case.data, transport="bytes", size=InputSize(256, 224), limits=MediaLimits(), param="upload")
