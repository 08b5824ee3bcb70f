"""A corpus of hostile and odd media inputs, generated in code (no files, no Ray).

Each case names the decoder it is for (``image`` -> ``models.media.decode_image``, ``audio`` ->
``models.media.decode_audio``) and what that decoder must do with it: raise one of the domain
errors (``InvalidInput`` 400, ``UnsupportedMedia`` 415, ``PayloadTooLarge`` 413) or decode it
(``ok``, 200). The unit tests run every case through the decoders; HTTP tests can post the same
bytes and expect ``case.status``.

Blobs are built lazily (``case.data``) and cached, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

Kind = Literal["image", "audio"]
Expect = Literal["ok", "InvalidInput", "UnsupportedMedia", "PayloadTooLarge"]
STATUS = {"ok": 200, "InvalidInput": 400, "UnsupportedMedia": 415, "PayloadTooLarge": 413}


@dataclass(frozen=True)
class HostileCase:
    name: str
    kind: Kind
    expect: Expect
    build: Callable[[], bytes]
    says: str = ""  # a phrase the error message must contain

    @property
    def data(self) -> bytes:
        return _built(self.build)

    @property
    def status(self) -> int:
        return STATUS[self.expect]


@functools.cache
def _built(build: Callable[[], bytes]) -> bytes:
    return build()


# ---------------------------------------------------------------- images


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(width: int = 64, height: int = 32) -> np.ndarray:
    """A smooth RGB test picture (uint8) with content in every channel."""
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None]
    rgb = np.stack(
        [
            np.broadcast_to(x, (height, width)),
            np.broadcast_to(y, (height, width)),
            np.broadcast_to((x + y) / 2, (height, width)),
        ],
        axis=-1,
    )
    return rgb.round().astype(np.uint8)


def png_rgb() -> bytes:
    return _save(Image.fromarray(gradient()), "PNG")


def jpeg_rgb() -> bytes:
    return _save(Image.fromarray(gradient(256, 192)), "JPEG", quality=90)


def avif_rgb() -> bytes:
    return _save(Image.fromarray(gradient()), "AVIF")


def gray16_gradient() -> np.ndarray:
    """A 16-bit greyscale ramp across the full 0..65535 range, 256 columns wide."""
    return np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (16, 1))


def png_gray16() -> bytes:
    return _save(Image.fromarray(gray16_gradient()), "PNG")  # PIL opens this as mode "I;16"


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_with_header(width: int, height: int, *, idat: bytes | None = None) -> bytes:
    """A hand-built 8-bit RGB PNG whose IHDR says ``width`` x ``height`` (the data may not match)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 16) if idat is None else idat
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def png_bad_crc() -> bytes:
    raw = bytearray(png_rgb())
    raw[29] ^= 0xFF  # the IHDR CRC (8 signature + 4 length + 4 tag + 13 body)
    return bytes(raw)


def bmp_with_header(width: int, height: int) -> bytes:
    """A 24-bit BMP header that claims ``width`` x ``height`` followed by a few bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\x00" * 64
    head = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return head + info + pixels


def gif_animated() -> bytes:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_palette_transparent() -> bytes:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (16, 0, 32, 32))
    return _save(img, "PNG", transparency=0)


def jpeg_cmyk() -> bytes:
    return _save(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG")  # pure red in CMYK


def tiff_float() -> bytes:
    return _save(Image.fromarray(np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (8, 1))), "TIFF")


def tiff_int32() -> bytes:
    return _save(Image.fromarray(np.tile(np.linspace(0, 65535, 64).astype(np.int32), (8, 1))), "TIFF")


def zlib_zeros(size: int, block: int = 1 << 20) -> bytes:
    """A zlib stream of ``size`` zero bytes (a bomb's payload) in milliseconds: a full flush makes each
    compressed block independent of the ones before, so one compressed block is repeated."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the zlib header and checksum are ours
    piece = comp.compress(b"\x00" * block) + comp.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(size, block)
    tail = comp.compress(b"\x00" * rest) + comp.flush()
    adler = ((size % 65521) << 16) | 1  # adler32 of zeros: a stays 1, b counts the bytes
    return b"\x78\xda" + piece * count + tail + struct.pack(">I", adler)


def png_of_zeros(width: int, height: int) -> bytes:
    """A real 8-bit RGB PNG of ``width`` x ``height`` black pixels, tiny (12000 x 12000 is 420 kB), which
    decodes to ``width * height * 3`` bytes: the payload of a bomb that hides behind another header."""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib_zeros((1 + width * 3) * height))
        + _png_chunk(b"IEND", b"")
    )


def ico_wrapping(png: bytes, *, entries: int = 1, says: int = 16) -> bytes:
    """An ICO whose directory says ``says`` x ``says`` for each of ``entries`` entries, all pointing at
    ``png`` (Pillow's ICO plugin decodes the PNG while opening the file, whatever its real size)."""
    offset = 6 + 16 * entries
    entry = struct.pack("<BBBBHHII", says % 256, says % 256, 0, 0, 1, 32, len(png), offset)
    return struct.pack("<HHH", 0, 1, entries % 65536) + entry * entries + png


def ico_bomb() -> bytes:
    """The attacker's ICO: 16 x 16 in its directory, a 12000 x 12000 PNG inside (432 MB decoded)."""
    return ico_wrapping(png_of_zeros(12_000, 12_000))


def _tiff_ifd(width: int, height: int, compression: int, offset: int, size: int, next_ifd: int) -> bytes:
    """One grey 8-bit baseline TIFF page in one strip."""
    short, long_ = 3, 4
    tags = [
        (256, long_, width),
        (257, long_, height),
        (258, short, 8),
        (259, short, compression),
        (262, short, 1),
        (273, long_, offset),
        (277, short, 1),
        (278, long_, height),
        (279, long_, size),
    ]
    body = b"".join(
        struct.pack("<HHII", tag, kind, 1, value)
        if kind == long_
        else struct.pack("<HHIHH", tag, kind, 1, value, 0)
        for tag, kind, value in tags
    )
    return struct.pack("<H", len(tags)) + body + struct.pack("<I", next_ifd)


def tiff_pages(pages: list[tuple[int, int, int, bytes]]) -> bytes:
    """A little-endian TIFF of several grey pages, each (width, height, compression, strip bytes): the
    strips first, then the IFDs chained in order. A page may claim more than its strip holds."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    strips = []
    for _, _, _, strip in pages:
        strips.append((len(out), len(strip)))
        out += strip + b"\x00" * (len(strip) & 1)
    struct.pack_into("<I", out, 4, len(out))
    for i, ((width, height, compression, _), (offset, size)) in enumerate(zip(pages, strips)):
        ifd_len = 2 + 12 * 9 + 4
        next_ifd = len(out) + ifd_len if i + 1 < len(pages) else 0
        out += _tiff_ifd(width, height, compression, offset, size, next_ifd)
    return bytes(out)


def tiff_huge_second_page(*, real: bool) -> bytes:
    """A 64 x 32 first page, then a 12000 x 12000 page of deflated zeros (``real``, 144 MB decoded) or a
    page that merely claims 100000 x 100000 over a few bytes."""
    first = (64, 32, 1, gradient()[..., 0].tobytes())
    second = (12_000, 12_000, 8, zlib_zeros(12_000 * 12_000)) if real else (100_000, 100_000, 1, b"\x00" * 64)
    return tiff_pages([first, second])


_GIF_PIXEL = b"\x02\x02\x44\x01\x00"  # LZW (min code size 2): clear, index 0, end; then the block end


def gif_frames(sizes: list[tuple[int, int]], screen: tuple[int, int] = (16, 16)) -> bytes:
    """A hand-built GIF: a 2-colour palette and one image per ``sizes`` entry, each descriptor claiming
    that size over one pixel of data (the rest would decode as missing)."""
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frames = b"".join(b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + _GIF_PIXEL for w, h in sizes)
    return head + frames + b"\x3b"


def apng_huge_later_frame() -> bytes:
    """A two-frame 64 x 32 APNG whose second frame control chunk claims 12000 x 12000."""
    frames = [Image.fromarray(gradient()), Image.fromarray(255 - gradient())]
    raw = bytearray(_save(frames[0], "PNG", save_all=True, append_images=frames[1:]))
    pos = raw.index(b"fcTL", raw.index(b"fcTL") + 4)  # the second frame's control chunk
    struct.pack_into(">II", raw, pos + 8, 12_000, 12_000)  # after the tag: sequence number, width, height
    body = bytes(raw[pos : pos + 4 + 26])
    struct.pack_into(">I", raw, pos + 4 + 26, zlib.crc32(body))
    return bytes(raw)


def psd_header(width: int = 12_000, height: int = 12_000) -> bytes:
    """A minimal Photoshop header (Pillow cannot write PSD): RGB, 8 bits, no image data."""
    return b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3) + b"\x00" * 16


def _pillow(fmt: str, mode: str = "RGB", **kw) -> Callable[[], bytes]:
    return lambda: _save(Image.fromarray(gradient()).convert(mode), fmt, **kw)


def _head(build: Callable[[], bytes], n: int) -> Callable[[], bytes]:
    return lambda: build()[:n]


def _fraction(build: Callable[[], bytes], part: float) -> Callable[[], bytes]:
    return lambda: (lambda raw: raw[: int(len(raw) * part)])(build())


IMAGE_CASES = [
    HostileCase("image-empty", "image", "InvalidInput", lambda: b""),
    HostileCase(
        "image-plain-text", "image", "UnsupportedMedia", lambda: b"this is not an image at all\n" * 4
    ),
    HostileCase(
        "image-svg",
        "image",
        "UnsupportedMedia",
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
    ),
    HostileCase("image-png-signature-only", "image", "InvalidInput", lambda: b"\x89PNG\r\n\x1a\n"),
    HostileCase("image-png-truncated-ihdr", "image", "InvalidInput", _head(png_rgb, 20)),
    HostileCase(
        "image-png-truncated-idat",
        "image",
        "InvalidInput",
        _fraction(png_rgb, 0.6),
        "PNG image but is truncated or corrupt",
    ),
    HostileCase("image-png-bad-crc", "image", "InvalidInput", png_bad_crc),
    HostileCase("image-png-0x0", "image", "InvalidInput", lambda: png_with_header(0, 0)),
    HostileCase("image-png-0-wide", "image", "InvalidInput", lambda: png_with_header(0, 10)),
    HostileCase(
        "image-png-huge-header", "image", "PayloadTooLarge", lambda: png_with_header(100_000, 100_000)
    ),
    HostileCase(
        "image-png-max-width-header", "image", "PayloadTooLarge", lambda: png_with_header(2**31 - 1, 1)
    ),
    HostileCase(
        "image-png-idat-garbage",
        "image",
        "InvalidInput",
        lambda: png_with_header(8, 8, idat=b"not zlib data at all"),
    ),
    HostileCase("image-jpeg-soi-only", "image", "InvalidInput", lambda: b"\xff\xd8"),
    HostileCase("image-jpeg-header-only", "image", "InvalidInput", _head(jpeg_rgb, 400)),
    HostileCase("image-jpeg-truncated", "image", "InvalidInput", _fraction(jpeg_rgb, 0.4)),
    HostileCase("image-gif-magic-only", "image", "InvalidInput", lambda: b"GIF89a"),
    HostileCase("image-gif-truncated", "image", "InvalidInput", _head(gif_animated, 30)),
    HostileCase("image-bmp-huge-header", "image", "PayloadTooLarge", lambda: bmp_with_header(50_000, 50_000)),
    HostileCase("image-bmp-truncated", "image", "InvalidInput", lambda: bmp_with_header(64, 64)),
    HostileCase("image-bmp-0x0", "image", "InvalidInput", lambda: bmp_with_header(0, 0)),
    HostileCase("image-tiff-truncated", "image", "InvalidInput", _head(tiff_float, 12)),
    HostileCase(
        "image-webp-truncated",
        "image",
        "InvalidInput",
        _head(lambda: _save(Image.fromarray(gradient()), "WEBP"), 30),
    ),
    HostileCase(
        "image-heic-brand",
        "image",
        "UnsupportedMedia",
        lambda: struct.pack(">I", 24) + b"ftypheic" + b"\x00" * 12 + b"\x00\x00\x00\x08mdat",
    ),
    HostileCase("image-avif-truncated", "image", "InvalidInput", _head(avif_rgb, 40)),
    HostileCase(
        "image-wav-audio",
        "image",
        "UnsupportedMedia",
        lambda: wav(pcm16(sine(0.1))),
        "WAV file, not an image",
    ),
    HostileCase("image-mp3-audio", "image", "UnsupportedMedia", lambda: av_encoded("mp3", "libmp3lame")),
    # odd but valid: these must decode to a sane RGB picture
    HostileCase("image-gif-animated", "image", "ok", gif_animated),
    HostileCase("image-avif", "image", "ok", avif_rgb),
    HostileCase("image-png-gray16", "image", "ok", png_gray16),
    HostileCase("image-tiff-int32", "image", "ok", tiff_int32),
    HostileCase("image-tiff-float", "image", "ok", tiff_float),
    HostileCase("image-png-la", "image", "ok", lambda: _save(Image.new("LA", (16, 16), (128, 200)), "PNG")),
    HostileCase("image-png-palette-transparency", "image", "ok", png_palette_transparent),
    HostileCase("image-jpeg-cmyk", "image", "ok", jpeg_cmyk),
    HostileCase("image-png-1bit", "image", "ok", lambda: _save(Image.new("1", (16, 16), 1), "PNG")),
    # formats outside the allow-list: refused from their magic bytes, before any Pillow plugin runs
    HostileCase(
        "image-ico-wraps-12000px-png",
        "image",
        "UnsupportedMedia",
        ico_bomb,
        "ICO image, which this server does not decode (it decodes JPEG, PNG, WebP, AVIF, GIF, BMP, TIFF)",
    ),
    HostileCase(
        "image-ico-65535-entries",
        "image",
        "UnsupportedMedia",
        lambda: ico_wrapping(png_rgb(), entries=65_535),
        "ICO image",
    ),
    HostileCase(
        "image-ico-says-256-wraps-5000px-png",
        "image",
        "UnsupportedMedia",
        lambda: ico_wrapping(png_of_zeros(5_000, 5_000), says=0),
        "ICO image",
    ),
    HostileCase("image-ico-plain", "image", "UnsupportedMedia", _pillow("ICO"), "ICO image"),
    HostileCase(
        "image-cur",
        "image",
        "UnsupportedMedia",
        lambda: (lambda raw: raw[:2] + b"\x02\x00" + raw[4:])(_pillow("ICO")()),
        "not an image in a format",
    ),
    HostileCase("image-icns", "image", "UnsupportedMedia", _pillow("ICNS"), "ICNS image"),
    HostileCase("image-psd-12000px", "image", "UnsupportedMedia", psd_header, "PSD image"),
    HostileCase("image-dds", "image", "UnsupportedMedia", _pillow("DDS"), "DDS image"),
    HostileCase("image-jpeg2000-jp2", "image", "UnsupportedMedia", _pillow("JPEG2000"), "JPEG 2000 image"),
    HostileCase(
        "image-jpeg2000-codestream",
        "image",
        "UnsupportedMedia",
        _pillow("JPEG2000", no_jp2=True),
        "JPEG 2000 image",
    ),
    HostileCase("image-sgi", "image", "UnsupportedMedia", _pillow("SGI"), "SGI image"),
    HostileCase("image-qoi", "image", "UnsupportedMedia", _pillow("QOI"), "QOI image"),
    HostileCase(
        "image-tga",
        "image",
        "UnsupportedMedia",
        _pillow("TGA"),
        "not an image in a format this server decodes (JPEG, PNG, WebP, AVIF, GIF, BMP, TIFF)",
    ),
    HostileCase("image-pcx", "image", "UnsupportedMedia", _pillow("PCX"), "not an image in a format"),
    HostileCase("image-xbm", "image", "UnsupportedMedia", _pillow("XBM", "1"), "not an image in a format"),
    HostileCase("image-ppm", "image", "UnsupportedMedia", _pillow("PPM"), "not an image in a format"),
    HostileCase(
        "image-pillow-im",
        "image",
        "UnsupportedMedia",  # hand-made: Pillow 15 stops writing IM
        lambda: (b"Image type: RGB image\r\nImage size (x*y): 12000*12000\r\n").ljust(512, b"\x1a"),
        "not an image in a format",
    ),
    HostileCase(
        "image-spider", "image", "UnsupportedMedia", _pillow("SPIDER", "F"), "not an image in a format"
    ),
    # several frames or pages: the first is checked and decoded, later ones are never read
    HostileCase(
        "image-gif-first-frame-beyond-screen",
        "image",
        "PayloadTooLarge",
        lambda: gif_frames([(12_000, 12_000)]),
        "12000x12000",
    ),
    HostileCase("image-gif-huge-later-frame", "image", "ok", lambda: gif_frames([(1, 1), (12_000, 12_000)])),
    HostileCase("image-gif-20000-frames", "image", "ok", lambda: gif_frames([(1, 1)] * 20_000)),
    HostileCase("image-apng-huge-later-frame", "image", "ok", apng_huge_later_frame),
    HostileCase("image-tiff-12000px-second-page", "image", "ok", lambda: tiff_huge_second_page(real=True)),
    HostileCase(
        "image-tiff-second-page-claims-100000px", "image", "ok", lambda: tiff_huge_second_page(real=False)
    ),
    HostileCase(
        "image-tiff-first-page-claims-100000px",
        "image",
        "PayloadTooLarge",
        lambda: tiff_pages([(100_000, 100_000, 1, b"\x00" * 64)]),
        "100000x100000",
    ),
]


# ---------------------------------------------------------------- audio


def wav(
    samples: bytes,
    *,
    channels: int = 1,
    rate: int = 16_000,
    bits: int = 16,
    fmt_tag: int = 1,
    data_size: int | None = None,
    with_data: bool = True,
) -> bytes:
    """A hand-built RIFF/WAVE file; every header field can lie about the data that follows."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if with_data:
        size = len(samples) if data_size is None else data_size
        chunks += b"data" + struct.pack("<I", size) + samples
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def float_wav(values: np.ndarray, rate: int = 16_000) -> bytes:
    return wav(values.astype("<f4").tobytes(), rate=rate, bits=32, fmt_tag=3)


def sine(seconds: float = 1.0, rate: int = 16_000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def pcm16(values: np.ndarray) -> bytes:
    return (np.clip(values, -1, 1) * 32767).astype("<i2").tobytes()


def with_value(value: float) -> np.ndarray:
    audio = sine()
    audio[4000] = value
    return audio


def encoded(fmt: str, subtype: str | None = None) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, sine(), 16_000, format=fmt, subtype=subtype)
    return buf.getvalue()


def av_encoded(
    container: str, codec: str, *, video_only: bool = False, seconds: float = 1.0, options: dict | None = None
) -> bytes:
    """A clip written by PyAV: a 440 Hz tone, or (``video_only``) a few black frames and no sound.
    ``options`` go to the muxer (``{"live": "1"}``: a WebM whose header states no duration)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=container, options=options or {}) as out:
        if video_only:
            stream = out.add_stream(codec, rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for _ in range(5):
                out.mux(
                    stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24"))
                )
        else:
            stream = out.add_stream(codec, rate=16_000)
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray(pcm16_planar(sine(seconds)), format="s16", layout="mono")
            frame.sample_rate = 16_000
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def pcm16_planar(values: np.ndarray) -> np.ndarray:
    return (np.clip(values, -1, 1) * 32767).astype(np.int16)[None, :]


AUDIO_CASES = [
    HostileCase("audio-empty", "audio", "InvalidInput", lambda: b""),
    HostileCase("audio-plain-text", "audio", "UnsupportedMedia", lambda: b"this is not audio at all\n" * 8),
    HostileCase(
        "audio-random-bytes",
        "audio",
        "UnsupportedMedia",
        lambda: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    ),
    HostileCase("audio-png-image", "audio", "UnsupportedMedia", png_rgb, "PNG image, not audio"),
    HostileCase("audio-jpeg-image", "audio", "UnsupportedMedia", jpeg_rgb),
    HostileCase("audio-riff-header-only", "audio", "InvalidInput", lambda: b"RIFF\x04\x00\x00\x00WAVE"),
    HostileCase(
        "audio-wav-truncated-header",
        "audio",
        "InvalidInput",
        _head(lambda: wav(pcm16(sine())), 30),
        "header is truncated",
    ),
    HostileCase(
        "audio-wav-garbage-after-riff",
        "audio",
        "InvalidInput",
        lambda: b"RIFF\x00\x10\x00\x00WAVE" + b"\xde\xad\xbe\xef" * 64,
    ),
    HostileCase(
        "audio-wav-zero-channels",
        "audio",
        "InvalidInput",
        lambda: wav(pcm16(sine()), channels=0),
        "0 channels",
    ),
    HostileCase("audio-wav-zero-rate", "audio", "InvalidInput", lambda: wav(pcm16(sine()), rate=0), "0 Hz"),
    HostileCase(
        "audio-wav-65535-channels",
        "audio",
        "InvalidInput",
        lambda: wav(pcm16(sine()), channels=65535, bits=8),
    ),
    HostileCase(
        "audio-wav-unknown-codec",
        "audio",
        "UnsupportedMedia",
        lambda: wav(pcm16(sine()), fmt_tag=0x1234),
        "encoding this server does not decode",
    ),
    HostileCase(
        "audio-wav-no-data-chunk",
        "audio",
        "InvalidInput",
        lambda: wav(b"", with_data=False),
        "no 'data' chunk",
    ),
    HostileCase("audio-wav-zero-frames", "audio", "InvalidInput", lambda: wav(b""), "no audio samples"),
    HostileCase(
        "audio-wav-float-nan",
        "audio",
        "InvalidInput",
        lambda: float_wav(with_value(np.nan)),
        "NaN or infinite",
    ),
    HostileCase("audio-wav-float-inf", "audio", "InvalidInput", lambda: float_wav(with_value(np.inf))),
    HostileCase("audio-wav-float-neg-inf", "audio", "InvalidInput", lambda: float_wav(with_value(-np.inf))),
    HostileCase(
        "audio-wav-1hz-long-header", "audio", "PayloadTooLarge", lambda: wav(pcm16(sine(0.1)), rate=1)
    ),
    HostileCase("audio-flac-magic-only", "audio", "InvalidInput", lambda: b"fLaC"),
    HostileCase("audio-flac-truncated-header", "audio", "InvalidInput", _head(lambda: encoded("FLAC"), 20)),
    HostileCase("audio-ogg-magic-only", "audio", "InvalidInput", lambda: b"OggS"),
    HostileCase(
        "audio-ogg-truncated-header", "audio", "InvalidInput", _head(lambda: encoded("OGG", "VORBIS"), 40)
    ),
    HostileCase(
        "audio-aiff-truncated-header",
        "audio",
        "UnsupportedMedia",
        _head(lambda: encoded("AIFF"), 24),
        "AIFF file, which this server does not decode (it decodes WAV, FLAC, Ogg, MP3, M4A, WebM)",
    ),
    HostileCase(
        "audio-mp3-id3-garbage",
        "audio",
        "InvalidInput",
        lambda: b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x13\x37" * 512,
    ),
    HostileCase("audio-mp4-truncated", "audio", "InvalidInput", _head(lambda: av_encoded("mp4", "aac"), 64)),
    HostileCase(
        "audio-mp4-video-only",
        "audio",
        "InvalidInput",
        lambda: av_encoded("mp4", "mpeg4", video_only=True),
        "no audio track",
    ),
    # odd but valid: these must decode to finite samples in [-1, 1]
    HostileCase("audio-wav-float-silence", "audio", "ok", lambda: float_wav(np.zeros(16_000, np.float32))),
    HostileCase("audio-wav-float-loud", "audio", "ok", lambda: float_wav(sine(amplitude=1000.0))),
    HostileCase("audio-wav-data-size-lies", "audio", "ok", lambda: wav(pcm16(sine()), data_size=2**31)),
    HostileCase("audio-wav-one-sample", "audio", "ok", lambda: wav(pcm16(sine()[:1]), rate=8_000)),
    HostileCase("audio-flac-truncated-half", "audio", "ok", _fraction(lambda: encoded("FLAC"), 0.5)),
    HostileCase("audio-mp3-frames-no-id3", "audio", "ok", lambda: encoded("MP3")),  # starts with a frame sync
    HostileCase("audio-webm-opus", "audio", "ok", lambda: av_encoded("webm", "libopus")),
    HostileCase(
        "audio-webm-live-no-duration",
        "audio",
        "ok",
        lambda: av_encoded("webm", "libopus", options={"live": "1"}),
    ),
    # formats outside the allow-list (libsndfile or FFmpeg would decode them): refused from their magic
    HostileCase("audio-aac-adts", "audio", "UnsupportedMedia", lambda: av_encoded("adts", "aac"), "AAC file"),
    HostileCase(
        "audio-aac-truncated-half",
        "audio",
        "UnsupportedMedia",
        _fraction(lambda: av_encoded("adts", "aac"), 0.5),
        "AAC file",
    ),
    HostileCase("audio-aiff", "audio", "UnsupportedMedia", lambda: encoded("AIFF"), "AIFF file"),
    HostileCase(
        "audio-au",
        "audio",
        "UnsupportedMedia",
        lambda: encoded("AU"),
        "not audio in a format this server decodes (WAV, FLAC, Ogg, MP3, M4A, WebM)",
    ),
    HostileCase("audio-caf", "audio", "UnsupportedMedia", lambda: encoded("CAF"), "not audio in a format"),
    HostileCase("audio-w64", "audio", "UnsupportedMedia", lambda: encoded("W64"), "not audio in a format"),
    HostileCase("audio-rf64", "audio", "UnsupportedMedia", lambda: encoded("RF64"), "not audio in a format"),
    HostileCase("audio-voc", "audio", "UnsupportedMedia", lambda: encoded("VOC"), "not audio in a format"),
    HostileCase(
        "audio-nist-sphere", "audio", "UnsupportedMedia", lambda: encoded("NIST"), "not audio in a format"
    ),
    HostileCase(
        "audio-avi-pcm",
        "audio",
        "UnsupportedMedia",
        lambda: av_encoded("avi", "pcm_s16le"),
        "not audio in a format",
    ),
    HostileCase(
        "audio-flv-pcm",
        "audio",
        "UnsupportedMedia",
        lambda: av_encoded("flv", "pcm_s16le"),
        "not audio in a format",
    ),
    HostileCase(
        "audio-mpegts-mp2",
        "audio",
        "UnsupportedMedia",
        lambda: av_encoded("mpegts", "mp2"),
        "not audio in a format",
    ),
    HostileCase(
        "audio-midi-header",
        "audio",
        "UnsupportedMedia",
        lambda: b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
        "not audio in a format",
    ),
    HostileCase(
        "audio-mp3-truncated-half", "audio", "ok", _fraction(lambda: av_encoded("mp3", "libmp3lame"), 0.5)
    ),
]

CASES = IMAGE_CASES + AUDIO_CASES
