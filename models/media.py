"""Decoding of untrusted media bytes into arrays, with limits checked before the costly work.

Images become RGB ``uint8`` arrays (H, W, 3); audio becomes mono ``float32`` at 16 kHz.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

SAMPLE_RATE = 16_000
# The pixel limit is ours (MediaLimits.max_image_pixels, checked from the header below); PIL's
# fixed global check would otherwise pre-empt it with its own number.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class MediaLimits:
    """Caps applied while decoding: checked from headers before full decoding wherever possible."""

    max_image_pixels: int = 40_000_000
    max_image_side: int = 1024  # larger images are downscaled in the gateway, not in the replicas
    max_audio_seconds: float = 600.0
    max_bytes: int = 50 * 1024 * 1024


def _check_size(raw: bytes, limits: MediaLimits, param: str) -> None:
    if not raw:
        raise InvalidInput(f"'{param}' is empty", param=param)
    if len(raw) > limits.max_bytes:
        raise PayloadTooLarge(f"'{param}' is {len(raw)} bytes; the limit is {limits.max_bytes}", param=param)


def decode_image(raw: bytes, *, limits: MediaLimits = MediaLimits(), param: str = "image") -> np.ndarray:
    """Decode an image to RGB uint8, refusing decompression bombs from the header alone."""
    _check_size(raw, limits, param)
    try:
        img = Image.open(io.BytesIO(raw))
        width, height = img.size  # read from the header, nothing decoded yet
        if width * height > limits.max_image_pixels:
            raise PayloadTooLarge(
                f"'{param}' is {width}x{height} = {width * height} pixels; the limit is {limits.max_image_pixels}",
                param=param,
            )
        img.draft("RGB", (limits.max_image_side, limits.max_image_side))  # cheap JPEG downscale
        img = img.convert("RGB")
    except UnidentifiedImageError as exc:
        raise UnsupportedMedia(f"'{param}' is not an image format this server decodes "
                               "(JPEG, PNG, WebP, GIF, BMP, TIFF...)", param=param) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise InvalidInput(f"'{param}' is a corrupt or truncated image: {exc}", param=param) from exc
    img.thumbnail((limits.max_image_side, limits.max_image_side), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def decode_audio(raw: bytes, *, limits: MediaLimits = MediaLimits(), param: str = "file") -> np.ndarray:
    """Decode any common audio container to mono float32 at 16 kHz, enforcing the duration cap."""
    _check_size(raw, limits, param)
    try:
        audio = _decode_with_soundfile(raw, limits, param)
    except _NotSoundfile:
        audio = _decode_with_av(raw, param)
    if audio.size == 0:
        raise InvalidInput(f"'{param}' contains no audio samples", param=param)
    _check_duration(audio.size / SAMPLE_RATE, limits, param)
    return audio


class _NotSoundfile(Exception):
    pass


def _check_duration(seconds: float, limits: MediaLimits, param: str) -> None:
    if seconds > limits.max_audio_seconds:
        raise PayloadTooLarge(
            f"'{param}' is {seconds:.1f} s long; the limit is {limits.max_audio_seconds:.0f} s", param=param
        )


def _decode_with_soundfile(raw: bytes, limits: MediaLimits, param: str) -> np.ndarray:
    import soundfile as sf
    import soxr

    try:
        info = sf.info(io.BytesIO(raw))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise _NotSoundfile() from exc
    _check_duration(info.frames / max(info.samplerate, 1), limits, param)  # before decoding
    try:
        data, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise InvalidInput(f"'{param}' is a corrupt or truncated audio file: {exc}", param=param) from exc
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE and mono.size:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _decode_with_av(raw: bytes, param: str) -> np.ndarray:
    """Compressed formats (mp3, m4a, webm...) through PyAV, which faster-whisper already needs."""
    import av
    from faster_whisper.audio import decode_audio as fw_decode

    try:
        return fw_decode(io.BytesIO(raw), sampling_rate=SAMPLE_RATE).astype(np.float32)
    except (av.error.FFmpegError, ValueError, IndexError, StopIteration) as exc:
        raise UnsupportedMedia(f"'{param}' could not be decoded as audio: {exc}", param=param) from exc
