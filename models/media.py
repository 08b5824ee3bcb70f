"""Decoding of untrusted media bytes into arrays, with limits checked before the costly work.

Images become RGB ``uint8`` arrays (H, W, 3); audio becomes mono ``float32`` at 16 kHz.

Every way the bytes can be bad ends in a domain error with a message written here, never the text of
a library exception (PIL, libsndfile and FFmpeg messages name internals such as errno codes):

* bytes in no format of the allow-list (``MediaLimits.image_formats`` / ``audio_formats``, by default
  ``IMAGE_FORMATS`` / ``AUDIO_FORMATS``), media of the other kind (an image sent as audio), a format we
  recognise but do not decode (ICO, PSD, HEIC...), or an audio encoding FFmpeg lacks -> ``UnsupportedMedia``,
  whose message lists the allowed formats;
* an allowed format that is truncated or corrupt (0x0 headers included), a file without an audio
  track or without samples, audio holding NaN or infinite samples -> ``InvalidInput``;
* over a pixel, duration or byte limit -> ``PayloadTooLarge`` (from headers wherever possible).

The format is identified here from the leading bytes, and only that format's decoder is run on them
(Pillow's ``formats=``, FFmpeg's demuxer, libsndfile's reported format must agree): a library never
gets to guess. That matters because some of Pillow's plugins decode while merely opening a file (an
ICO decodes the PNG it wraps, whatever size it is, before its size can be read), and FFmpeg probes
hundreds of demuxers.

Pixel conventions: images with more than 8 bits per sample (16-bit PNG/TIFF, mode ``I;16``/``I``)
are scaled to 0..255 (a full 16-bit range maps to the full 8-bit range); float images (mode ``F``)
are read as 0..1 when no value exceeds 1, else as 0..255, with NaN as 0; transparent pixels are
composited onto white (what a viewer shows, and what keeps dark text on a transparent logo legible).
Animated and multi-page images (GIF, APNG, WebP, TIFF, AVIF sequences, MPO) give their first frame; the
pixel cap is checked on it before it is decoded (a GIF frame larger than its screen grows the size
that is checked), and later frames are never read, whatever size they claim. EXIF orientation is
applied, so a model sees the picture upright (as a viewer shows it).

Sample conventions: float audio that exceeds full scale (|x| > 1, e.g. integer-scaled floats) is
scaled down so that its peak is 1.0, which keeps its waveform (clipping would square it off);
audio within full scale, silence included, is returned unchanged.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.errors import InvalidInput, MMServeError, PayloadTooLarge, UnsupportedMedia

SAMPLE_RATE = 16_000
# The pixel limit is ours (MediaLimits.max_image_pixels, checked from the header below); PIL's
# fixed global check would otherwise pre-empt it with its own number.
Image.MAX_IMAGE_PIXELS = None

# The allow-lists by default: the documented formats. Images cannot go beyond these (the table below
# knows no other image decoder); audio may add AAC (ADTS) and AIFF.
IMAGE_FORMATS = ("JPEG", "PNG", "WebP", "AVIF", "GIF", "BMP", "TIFF")
AUDIO_FORMATS = ("WAV", "FLAC", "Ogg", "MP3", "M4A", "WebM")


@dataclass(frozen=True)
class MediaLimits:
    """Caps applied while decoding: checked from headers before full decoding wherever possible, and
    the formats decoded at all (names as ``IMAGE_FORMATS`` / ``AUDIO_FORMATS`` spell them)."""

    max_image_pixels: int = 40_000_000
    max_image_side: int = 1024  # larger images are downscaled as they are decoded
    max_audio_seconds: float = 600.0
    max_bytes: int = 50 * 1024 * 1024
    image_formats: tuple[str, ...] = IMAGE_FORMATS
    audio_formats: tuple[str, ...] = AUDIO_FORMATS

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_formats", allowed_formats(self.image_formats, kind="image"))
        object.__setattr__(self, "audio_formats", allowed_formats(self.audio_formats, kind="audio"))


def _check_size(raw: bytes, limits: MediaLimits, param: str) -> None:
    if not raw:
        raise InvalidInput(f"'{param}' is empty", param=param)
    if len(raw) > limits.max_bytes:
        raise PayloadTooLarge(f"'{param}' is {len(raw)} bytes; the limit is {limits.max_bytes}", param=param)


# ----------------------------------------------------------------------------- format sniffing
@dataclass(frozen=True)
class Format:
    name: str  # as a sentence names it: "a PNG image", "an MP3 file"
    kind: str  # "image" or "audio"
    magic: tuple[tuple[int, bytes], ...]  # (offset, bytes) pairs that must all match
    label: str = ""  # its name in an allow-list ("PNG"); "" for a format we recognise but never decode
    pil: str = ""  # the one Pillow plugin that may open it
    demuxer: str = ""  # the one FFmpeg demuxer that may open it
    sndfile: tuple[str, ...] = ()  # what libsndfile must report for it ("WAV"); () for FFmpeg only


def _mpeg_audio(name: str, label: str, demuxer: str, second_bytes: bytes, sndfile: tuple[str, ...] = ()):
    """Headerless MPEG audio streams (MP3 frames, ADTS AAC) by their 12-bit sync word and layer bits."""
    return tuple(
        Format(name, "audio", ((0, bytes((0xFF, b))),), label, demuxer=demuxer, sndfile=sndfile)
        for b in second_bytes
    )


_FORMATS = (
    Format("a PNG image", "image", ((0, b"\x89PNG"),), "PNG", "PNG"),
    Format("a JPEG image", "image", ((0, b"\xff\xd8"),), "JPEG", "JPEG"),
    Format("a GIF image", "image", ((0, b"GIF8"),), "GIF", "GIF"),
    Format("a BMP image", "image", ((0, b"BM"),), "BMP", "BMP"),
    *(
        Format("a TIFF image", "image", ((0, magic),), "TIFF", "TIFF")
        for magic in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    ),  # classic and BigTIFF
    Format("a WebP image", "image", ((0, b"RIFF"), (8, b"WEBP")), "WebP", "WEBP"),
    Format(
        "a WAV file", "audio", ((0, b"RIFF"), (8, b"WAVE")), "WAV", demuxer="wav", sndfile=("WAV", "WAVEX")
    ),
    Format("a FLAC file", "audio", ((0, b"fLaC"),), "FLAC", demuxer="flac", sndfile=("FLAC",)),
    Format("an Ogg file", "audio", ((0, b"OggS"),), "Ogg", demuxer="ogg", sndfile=("OGG",)),
    Format("an MP3 file", "audio", ((0, b"ID3"),), "MP3", demuxer="mp3", sndfile=("MP3",)),
    *_mpeg_audio(
        "an MP3 file", "MP3", "mp3", b"\xfb\xfa\xf3\xf2\xe3\xe2", ("MP3",)
    ),  # MPEG-1/2/2.5 layer III
    *_mpeg_audio("an AAC file", "AAC", "aac", b"\xf1\xf0\xf9\xf8"),  # ADTS
    Format("an AIFF file", "audio", ((0, b"FORM"), (8, b"AIF")), "AIFF", demuxer="aiff", sndfile=("AIFF",)),
    Format("a WebM/Matroska file", "audio", ((0, b"\x1a\x45\xdf\xa3"),), "WebM", demuxer="matroska"),
    # recognised, to name them in the refusal, and never decoded (after the ISO/ftyp check in sniff,
    # so that an MP4 whose ftyp box is 256 bytes long is not taken for an ICO; no CUR: a truecolour
    # TGA starts with its magic)
    Format("an ICO image", "image", ((0, b"\x00\x00\x01\x00"),)),
    Format("an ICNS image", "image", ((0, b"icns"),)),
    Format("a PSD image", "image", ((0, b"8BPS"),)),
    Format("a DDS image", "image", ((0, b"DDS "),)),
    Format("a JPEG 2000 image", "image", ((0, b"\x00\x00\x00\x0cjP  "),)),
    Format("a JPEG 2000 image", "image", ((0, b"\xff\x4f\xff\x51"),)),
    Format("an SGI image", "image", ((0, b"\x01\xda"),)),
    Format("a QOI image", "image", ((0, b"qoif"),)),
    Format("an SVG image", "image", ((0, b"<svg"),)),
)
_AVIF = Format("an AVIF image", "image", (), "AVIF", "AVIF")
_HEIC = Format("a HEIC image", "image", ())
_M4A = Format("an MP4/M4A file", "audio", (), "M4A", demuxer="mp4")
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
KNOWN = {"image": IMAGE_FORMATS, "audio": AUDIO_FORMATS + ("AAC", "AIFF")}


def allowed_formats(names, *, kind: str) -> tuple[str, ...]:
    """``names`` as the allow-list spells them (case-insensitive in, canonical out); a name this module
    cannot decode safely is a configuration error, not a silent no-op."""
    canonical = {known.lower(): known for known in KNOWN[kind]}
    unknown = [n for n in names if str(n).lower() not in canonical]
    if unknown or not names:
        raise ValueError(f"{kind} formats: {unknown or 'none given'}; known: {', '.join(KNOWN[kind])}")
    return tuple(dict.fromkeys(canonical[str(n).lower()] for n in names))


def sniff(raw: bytes) -> Format | None:
    """The format the leading bytes announce, if any: the only decoder that is run on them."""
    if raw[4:8] == b"ftyp":
        return _sniff_iso(raw)
    for fmt in _FORMATS:
        if all(raw[offset : offset + len(magic)] == magic for offset, magic in fmt.magic):
            return fmt
    return None


def _sniff_iso(raw: bytes) -> Format:
    """An ISO base media file (ftyp box) by its brands: AVIF, HEIC, or else MP4/M4A audio. An AVIF may
    carry the generic ``mif1`` major brand with ``avif`` among its compatible brands."""
    box = min(int.from_bytes(raw[:4], "big"), 256)
    brands = {raw[8:12]} | {raw[i : i + 4] for i in range(16, box - 3, 4)}
    if brands & _AVIF_BRANDS:
        return _AVIF
    return _HEIC if brands & _HEIC_BRANDS else _M4A


def _allowed(fmt: Format | None, want: str, allowed: tuple[str, ...], param: str) -> Format:
    """``fmt`` if it is of kind ``want`` and on the allow-list; else the refusal, which lists the list."""
    listed = ", ".join(allowed)
    what = "an image" if want == "image" else "audio"
    if fmt is None:
        raise UnsupportedMedia(
            f"'{param}' is not {what} in a format this server decodes ({listed})", param=param
        )
    if fmt.kind != want:
        raise UnsupportedMedia(
            f"'{param}' is {fmt.name}, not {what} (this server decodes {listed})", param=param
        )
    if fmt.label not in allowed:
        raise UnsupportedMedia(
            f"'{param}' is {fmt.name}, which this server does not decode (it decodes {listed})", param=param
        )
    return fmt


def _corrupt(fmt: Format, param: str) -> InvalidInput:
    """The error for bytes of an allowed format that its decoder could not read."""
    return InvalidInput(
        f"'{param}' could not be decoded: it starts like {fmt.name} but is truncated or corrupt", param=param
    )


# ----------------------------------------------------------------------------- images
def open_image(raw: bytes, limits: MediaLimits = MediaLimits(), param: str = "image") -> Image.Image:
    """The upload opened and its header checked (bytes, format allow-list, pixel cap); nothing decoded
    yet. Only the plugin of the format the magic bytes announce may open it (``formats=``): Pillow
    would otherwise try each of its ~40 plugins, some of which decode as they open."""
    _check_size(raw, limits, param)
    fmt = _allowed(sniff(raw), "image", limits.image_formats, param)
    # PIL's plugins raise OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError...
    # on malformed bytes: any exception from them is the input's fault, and its text is not for users.
    try:
        img = Image.open(io.BytesIO(raw), formats=(fmt.pil,))
        width, height = img.size  # read from the header, nothing decoded yet
    except Exception as exc:
        raise _corrupt(fmt, param) from exc
    _check_pixels(width, height, limits, param)
    return img


def decode_image(
    raw: bytes, *, limits: MediaLimits = MediaLimits(), param: str = "image", min_side: int | None = None
) -> np.ndarray:
    """Decode an image to upright RGB uint8, refusing decompression bombs from the header alone. With
    ``min_side`` (what a model's preprocess resizes the short side to) no more is decoded or kept
    than that: a JPEG is drafted to it and the short side shrunk to it, never enlarged."""
    img = open_image(raw, limits, param)
    largest = limits.max_image_side
    side = min(min_side or largest, largest)
    try:
        img.draft("RGB", (side, side))  # cheap JPEG downscale (DCT domain), to no less than side x side
        img.load()  # the first frame of an animation
    except Exception as exc:
        raise _corrupt(sniff(raw), param) from exc
    orientation = _orientation(img)
    img = _to_rgb(img)
    if min_side and min(img.size) > min_side:
        scale = min_side / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    img.thumbnail((largest, largest), Image.BICUBIC)
    return np.asarray(_upright(img, orientation), dtype=np.uint8)


_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the picture as a viewer does (as ImageOps.exif_transpose)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag of a loaded image (1, upright, when absent or unreadable: a broken EXIF
    block should not cost the caller a picture whose pixels are fine)."""
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:
        return 1


def _upright(img: Image.Image, orientation: int) -> Image.Image:
    """``img`` turned as its EXIF orientation says. Applied last, to the shrunk RGB picture (the cheapest
    to turn): the resizes before it bound the short and the long side, which a quarter turn keeps."""
    method = _TRANSPOSE.get(orientation)
    return img if method is None else img.transpose(method)


def _check_pixels(width: int, height: int, limits: MediaLimits, param: str) -> None:
    # (PIL itself refuses 0-pixel headers at open, so those end as "truncated or corrupt")
    if width * height > limits.max_image_pixels:
        raise PayloadTooLarge(
            f"'{param}' is {width}x{height} = {width * height} pixels; the limit is {limits.max_image_pixels}",
            param=param,
        )


_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def _to_rgb(img: Image.Image) -> Image.Image:
    """A decoded PIL image of any mode as 8-bit RGB (see the module notes for the conventions)."""
    if img.mode in _HIGH_DEPTH:
        return Image.fromarray(_to_8bit(np.asarray(img), img.mode)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _to_8bit(pixels: np.ndarray, mode: str) -> np.ndarray:
    """One channel of 16-bit, 32-bit integer or float samples scaled to uint8."""
    if mode == "F":
        values = np.nan_to_num(pixels.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return np.clip(values, 0, 255).round().astype(np.uint8)
    values = pixels.astype(np.int64) if mode == "I" else pixels.astype(np.uint32)
    if mode == "I" and values.size and values.max() <= 255:  # 8-bit data stored as 32-bit integers
        return np.clip(values, 0, 255).astype(np.uint8)
    return ((np.clip(values, 0, 65535) + 128) // 257).astype(np.uint8)  # 0..65535 -> 0..255, rounded


# ----------------------------------------------------------------------------- audio
def decode_audio(raw: bytes, *, limits: MediaLimits = MediaLimits(), param: str = "file") -> np.ndarray:
    """Decode audio of an allowed format to mono float32 at 16 kHz, enforcing the duration cap (from the
    header first, wherever the format has one)."""
    _check_size(raw, limits, param)
    fmt = _allowed(sniff(raw), "audio", limits.audio_formats, param)
    try:
        audio = _decode_with_soundfile(raw, limits, param, fmt)
    except _NotSoundfile:
        audio = _decode_with_av(raw, limits, param, fmt)
    if audio.size == 0:
        raise InvalidInput(f"'{param}' contains no audio samples", param=param)
    _check_duration(audio.size / SAMPLE_RATE, limits, param)
    return _finite_full_scale(audio, param)


class _NotSoundfile(Exception):
    pass


def _check_duration(seconds: float, limits: MediaLimits, param: str) -> None:
    if seconds > limits.max_audio_seconds:
        raise PayloadTooLarge(
            f"'{param}' is {seconds:.1f} s long; the limit is {limits.max_audio_seconds:.0f} s", param=param
        )


def _finite_full_scale(audio: np.ndarray, param: str) -> np.ndarray:
    """Refuse NaN / infinite samples (every model downstream would turn them into garbage) and scale
    audio louder than full scale down to a peak of 1.0."""
    if not np.isfinite(audio).all():
        raise InvalidInput(f"'{param}' contains NaN or infinite samples", param=param)
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        audio = (audio / peak).astype(np.float32)
    return audio


class _SndfileBytes(io.BytesIO):
    """In-memory file for libsndfile. Corrupt headers make it seek before the start; BytesIO raises
    there, inside a C callback, and Python prints that on stderr as an "Exception ignored" traceback
    per request. Staying at the start is what libsndfile ended up with anyway."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return super().seek(offset, whence)
        except ValueError:
            return super().seek(0)


def _decode_with_soundfile(raw: bytes, limits: MediaLimits, param: str, fmt: Format) -> np.ndarray:
    """WAV, FLAC, Ogg, MP3, AIFF through libsndfile, when it reads them as the format sniffed (it picks
    its own reader, so it is held to that); anything else goes on to PyAV."""
    import soundfile as sf
    import soxr

    if not fmt.sndfile:
        raise _NotSoundfile()
    try:
        info = sf.info(_SndfileBytes(raw))
    except Exception as exc:
        raise _NotSoundfile() from exc
    if info.format not in fmt.sndfile:
        raise _NotSoundfile()
    _check_duration(info.frames / max(info.samplerate, 1), limits, param)  # before decoding
    try:
        data, rate = sf.read(_SndfileBytes(raw), dtype="float32", always_2d=True)
    except Exception as exc:  # e.g. a truncated FLAC stream: FFmpeg decodes what is there
        raise _NotSoundfile() from exc
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE and mono.size and np.isfinite(mono).all():  # NaN is refused by the caller
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _decode_with_av(raw: bytes, limits: MediaLimits, param: str, fmt: Format) -> np.ndarray:
    """Compressed formats (mp3, m4a, webm...) through PyAV (FFmpeg) with the sniffed format's demuxer
    only (FFmpeg would probe hundreds), refused from the header's duration where it states one, then
    resampled as they are decoded and stopped as soon as they pass the duration cap, so a small file
    cannot expand without bound."""
    import av

    try:
        container = av.open(io.BytesIO(raw), format=fmt.demuxer, metadata_errors="ignore")
    except Exception as exc:
        raise _av_error(exc, raw, fmt, param) from exc
    with container:
        if not container.streams.audio:
            raise InvalidInput(f"'{param}' has no audio track", param=param)
        if container.duration and container.duration > 0:  # microseconds, from the header or bitrate
            _check_duration(container.duration / av.time_base, limits, param)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        samples = _Samples(int(limits.max_audio_seconds * SAMPLE_RATE), limits, param)
        try:
            for frame in _audio_frames(container, samples):
                frame.pts = None  # timestamps of broken files confuse the resampler; order is enough
                samples.add(resampler.resample(frame))
            samples.add(resampler.resample(None))
        except MMServeError:
            raise
        except Exception as exc:
            raise _av_error(exc, raw, fmt, param) from exc
    return samples.array()


class _Samples:
    """Resampled mono chunks, refused with PayloadTooLarge as soon as they pass the duration cap."""

    def __init__(self, max_samples: int, limits: MediaLimits, param: str) -> None:
        self.chunks: list[np.ndarray] = []
        self.count, self.max_samples, self.limits, self.param = 0, max_samples, limits, param

    def add(self, frames) -> None:
        for frame in frames:
            chunk = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            self.chunks.append(chunk)
            self.count += chunk.size
        if self.count > self.max_samples:
            _check_duration(self.count / SAMPLE_RATE, self.limits, self.param)

    def array(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)


def _audio_frames(container, samples: _Samples):
    """Frames of the first audio stream; bad data or EOF after some audio is a truncated tail: it ends
    the stream, and what came before is kept (as libsndfile does for a short WAV)."""
    import av

    frames = container.decode(audio=0)
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except (av.error.InvalidDataError, av.error.EOFError):
            if samples.count:
                return
            raise


def _av_error(exc: Exception, raw: bytes, fmt: Format, param: str) -> MMServeError:
    import av

    if isinstance(exc, av.error.DecoderNotFoundError):
        return UnsupportedMedia(f"'{param}' uses an audio encoding this server does not decode", param=param)
    if fmt.label == "WAV":
        return InvalidInput(f"'{param}' could not be decoded as a WAV file: {_wav_problem(raw)}", param=param)
    return _corrupt(fmt, param)


def _wav_problem(raw: bytes) -> str:
    """What is wrong with a RIFF/WAVE header that neither decoder could read (for the error message)."""
    pos, has_fmt = 12, False
    while pos + 8 <= len(raw):
        tag, size = raw[pos : pos + 4], struct.unpack_from("<I", raw, pos + 4)[0]
        if tag == b"fmt ":
            if size < 16 or pos + 24 > len(raw):
                return "its 'fmt ' header is truncated"
            _, channels, rate = struct.unpack_from("<HHI", raw, pos + 8)
            if channels == 0:
                return "its header says it has 0 channels"
            if rate == 0:
                return "its header says its sample rate is 0 Hz"
            has_fmt = True
        elif tag == b"data":
            return "its audio data is corrupt" if has_fmt else "it has no 'fmt ' header before its audio data"
        pos += 8 + size + (size & 1)
    return "it has no 'data' chunk" if has_fmt else "its header is truncated or corrupt"
