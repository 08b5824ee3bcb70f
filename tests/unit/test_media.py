import io

import numpy as np
import pytest
from PIL import Image

from models.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia
from models.media import SAMPLE_RATE, MediaLimits, decode_audio, decode_image
from tests import assets


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
