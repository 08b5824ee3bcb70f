import base64
import gc
import io
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from api.schemas import MediaError, media_bytes
from config.settings import GatewaySettings
from models import media
from models.errors import InvalidInput, MMServeError, PayloadTooLarge, UnsupportedMedia
from models.image_input import Encoded, InputSize, for_replica
from models.media import AUDIO_FORMATS, IMAGE_FORMATS, SAMPLE_RATE, MediaLimits, decode_audio, decode_image
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
_LEAKS = re.compile(
    r"[A-Za-z]+(Error|Exception)\b|Errno|errno|Traceback|object at 0x|<_io|tuple index|"
    r"avcodec|libsndfile|returned -?\d+|image file is|cannot identify|Invalid data found"
)


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
    # ~1 s of live WebM: its header states no duration, and libsndfile cannot read it, so FFmpeg decodes it
    raw = hostile_media.av_encoded("webm", "libopus", options={"live": "1"})
    assert decode_audio(raw).size > 0.9 * SAMPLE_RATE
    refused_at = []
    check = media._check_duration
    monkeypatch.setattr(media, "_check_duration", lambda s, *a: refused_at.append(s) or check(s, *a))
    with pytest.raises(PayloadTooLarge) as err:
        decode_audio(raw, limits=MediaLimits(max_audio_seconds=0.25))
    assert err.value.param == "file"
    assert refused_at[-1] < 0.5  # decoding stopped soon after the cap, not at the end of the file


def test_compressed_audio_over_cap_refused_from_its_header(monkeypatch):
    raw = hostile_media.av_encoded("mp4", "aac")  # ~1 s, stated in the MP4 header
    decoded = []
    monkeypatch.setattr(media._Samples, "add", lambda self, frames: decoded.append(frames))
    with pytest.raises(PayloadTooLarge) as err:
        decode_audio(raw, limits=MediaLimits(max_audio_seconds=0.25))
    assert "1.1 s long" in err.value.message and decoded == []  # not a frame decoded


def test_corrupt_header_leaves_nothing_on_stderr(monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(InvalidInput):  # AIFF is off by default; libsndfile reads it once allowed
        decode_audio(
            hostile_media._head(lambda: hostile_media.encoded("AIFF"), 24)(),
            limits=MediaLimits(audio_formats=AUDIO_FORMATS + ("AIFF",)),
        )
    gc.collect()
    assert unraisable == []


def test_truncated_compressed_audio_keeps_what_was_decoded():
    raw = hostile_media.av_encoded("adts", "aac")
    with_aac = MediaLimits(audio_formats=AUDIO_FORMATS + ("AAC",))  # ADTS is off by default
    whole, half = decode_audio(raw, limits=with_aac), decode_audio(raw[: len(raw) // 2], limits=with_aac)
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
    assert (type(err.value), err.value.message, err.value.param) == (
        type(expected.value),
        expected.value.message,
        expected.value.param,
    )
    if transport == "bytes" and case.expect in ("PayloadTooLarge", "UnsupportedMedia"):
        with pytest.raises(type(expected.value)):
            for_replica(
                case.data, transport="bytes", size=InputSize(256, 224), limits=MediaLimits(), param="upload"
            )


# ----------------------------------------------------------------------- allow-lists
def _peak_rss_growth_mb(*case_names: str) -> float:
    """Peak RSS growth (MB) of decoding the named corpus cases in a fresh interpreter, from its VmHWM
    (the high-water mark of its own memory map; ``ru_maxrss`` would start at this process's size, which
    the kernel carries across fork and exec)."""
    code = textwrap.dedent(f"""
        from models.errors import MMServeError
        from models.media import decode_image
        from tests import hostile_media

        def peak_kb():
            status = open("/proc/self/status").read()
            return int(status.split("VmHWM:")[1].split()[0])

        blobs = [c.data for c in hostile_media.CASES if c.name in {case_names!r}]
        assert len(blobs) == {len(case_names)}
        before = peak_kb()
        for raw in blobs:
            try:
                decode_image(raw)
            except MMServeError:
                pass
        print((peak_kb() - before) / 1024)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_ico_bomb_refused_without_decoding_the_png_inside():
    """The attacker's ICO says 16 x 16 and wraps a 12000 x 12000 PNG (432 MB decoded): Pillow's ICO
    plugin decoded it while opening the file. Refused from the magic bytes, the process barely grows."""
    case = next(c for c in hostile_media.CASES if c.name == "image-ico-wraps-12000px-png")
    with pytest.raises(UnsupportedMedia) as err:
        decode_image(case.data, param="image")
    assert err.value.message == (
        "'image' is an ICO image, which this server does not decode "
        "(it decodes JPEG, PNG, WebP, AVIF, GIF, BMP, TIFF)"
    )
    assert _peak_rss_growth_mb("image-ico-wraps-12000px-png", "image-ico-says-256-wraps-5000px-png") < 40


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_later_frames_and_pages_are_never_decoded():
    """A TIFF whose second page is 12000 x 12000 (144 MB decoded) and GIFs with a 12000 x 12000 later frame
    or 20000 frames give their first frame, and decoding them costs no more than that frame."""
    tiff = decode_image(hostile_media.tiff_huge_second_page(real=True))
    assert tiff.shape == (32, 64, 3) and (tiff[..., 0] == hostile_media.gradient()[..., 0]).all()
    assert (
        _peak_rss_growth_mb(
            "image-tiff-12000px-second-page",
            "image-gif-huge-later-frame",
            "image-gif-20000-frames",
            "image-apng-huge-later-frame",
        )
        < 40
    )


@pytest.mark.parametrize("name", ["image-tiff-12000px-second-page", "image-gif-huge-later-frame"])
def test_frames_are_decoded_only_up_to_the_first(name, monkeypatch):
    """Pillow never moves past the first frame (seeking would read, and for GIF decode, later ones)."""
    seeks = []
    original = Image.Image.seek
    monkeypatch.setattr(Image.Image, "seek", lambda self, frame: seeks.append(frame) or original(self, frame))
    for cls in {type(Image.open(io.BytesIO(c.data))) for c in hostile_media.CASES if c.name == name}:
        monkeypatch.setattr(
            cls, "seek", lambda self, frame, _o=cls.seek: seeks.append(frame) or _o(self, frame)
        )
    decode_image(next(c for c in hostile_media.CASES if c.name == name).data)
    assert all(frame == 0 for frame in seeks), seeks


def test_image_allow_list_is_configurable():
    png_only = MediaLimits(image_formats=("png",))
    assert png_only.image_formats == ("PNG",)
    assert decode_image(hostile_media.png_rgb(), limits=png_only).shape == (32, 64, 3)
    with pytest.raises(UnsupportedMedia) as err:
        decode_image(hostile_media.jpeg_rgb(), limits=png_only, param="photo")
    assert err.value.message == "'photo' is a JPEG image, which this server does not decode (it decodes PNG)"
    with pytest.raises(UnsupportedMedia, match=r"\(PNG\)$"):
        decode_image(b"not an image at all", limits=png_only)
    with pytest.raises(UnsupportedMedia) as err:  # the replica's side of ``bytes`` obeys the same list
        for_replica(
            hostile_media.jpeg_rgb(),
            transport="bytes",
            size=InputSize(256, 224),
            limits=png_only,
            param="photo",
        )


def test_allow_lists_come_from_the_gateway_settings():
    assert (
        GatewaySettings().limits().image_formats
        == IMAGE_FORMATS
        == ("JPEG", "PNG", "WebP", "AVIF", "GIF", "BMP", "TIFF")
    )
    assert (
        GatewaySettings().limits().audio_formats
        == AUDIO_FORMATS
        == ("WAV", "FLAC", "Ogg", "MP3", "M4A", "WebM")
    )
    limits = GatewaySettings(image_formats=["jpeg", "webp"], audio_formats=["wav", "aac"]).limits()
    assert (limits.image_formats, limits.audio_formats) == (("JPEG", "WebP"), ("WAV", "AAC"))
    assert decode_audio(hostile_media.av_encoded("adts", "aac"), limits=limits).size > 0.9 * SAMPLE_RATE
    with pytest.raises(UnsupportedMedia, match=r"it decodes WAV, AAC\)$"):
        decode_audio(hostile_media.encoded("FLAC"), limits=limits)
    for bad in (["ICO"], [], ["PNG", "PSD"]):
        with pytest.raises(ValueError, match="known: JPEG, PNG, WebP, AVIF, GIF, BMP, TIFF"):
            GatewaySettings(image_formats=bad)


def test_audio_decoders_run_only_the_sniffed_format(monkeypatch):
    """FFmpeg gets the demuxer of the format the magic bytes announce, never a probe of all of them."""
    import av

    clips = hostile_media.av_encoded("mp4", "aac"), hostile_media.av_encoded("webm", "libopus")
    opened = []
    original = av.open
    monkeypatch.setattr(av, "open", lambda *a, **kw: opened.append(kw.get("format")) or original(*a, **kw))
    for clip in clips:
        decode_audio(clip)
    assert opened == ["mp4", "matroska"]


def test_avif_with_the_generic_major_brand_is_avif():
    raw = bytearray(hostile_media.avif_rgb())
    assert raw[8:12] == b"avif"
    raw[8:12] = b"mif1"  # the major brand some encoders write; "avif" stays among the compatible brands
    assert media.sniff(bytes(raw)).label == "AVIF"
    assert media.sniff(struct_ftyp(b"heic", b"mif1", b"heic")).name == "a HEIC image"
    assert media.sniff(struct_ftyp(b"M4A ", b"isom", b"M4A ")).label == "M4A"


def struct_ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = b"ftyp" + major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (4 + len(body)).to_bytes(4, "big") + body


# ----------------------------------------------------------------------- EXIF orientation
def _sideways(orientation: int, fmt: str = "PNG") -> tuple[bytes, np.ndarray]:
    """A 64 x 32 picture (red in its left quarter) stored with an EXIF orientation tag, and the stored
    pixels: a camera held sideways stores it turned and says how to turn it back."""
    pixels = hostile_media.gradient()
    pixels[:, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue(), pixels


@pytest.mark.parametrize(
    "orientation, turns", [(6, -1), (8, 1)]
)  # 6: turn clockwise to view, 8: counter-clockwise
def test_exif_orientation_is_applied(orientation, turns):
    raw, stored = _sideways(orientation)
    assert np.array_equal(decode_image(raw), np.rot90(stored, k=turns))
    jpeg, _ = _sideways(orientation, "JPEG")
    upright = decode_image(jpeg)
    assert upright.shape == (64, 32, 3)
    red_rows = slice(0, 12) if orientation == 6 else slice(52, 64)  # the left quarter turned to top or bottom
    assert (upright[red_rows, :, 0] > 200).all() and (upright[red_rows, :, 1] < 60).all()


def _sent(raw: bytes, transport: str) -> np.ndarray:
    """What the model gets for ``raw`` over ``transport`` (``bytes``: as the replica decodes it)."""
    size = InputSize(resize=24, crop=16)
    sent = for_replica(raw, transport=transport, size=size, limits=MediaLimits(), param="image")
    return (sent.decode(size) if isinstance(sent, Encoded) else getattr(sent, "pixels", sent)).astype(int)


@pytest.mark.parametrize("transport", ["array", "draft", "input", "bytes"])
def test_exif_orientation_applied_on_every_transport(transport):
    """The model sees the upright picture whichever side decodes it (``bytes``: the replica): what it
    gets for the sideways photo is what it gets for the same photo stored upright."""
    raw, stored = _sideways(8)
    upright, turned_away = (_encode(Image.fromarray(np.rot90(stored, k=k).copy())) for k in (1, -1))
    got = _sent(raw, transport)
    assert got.shape == _sent(upright, transport).shape
    assert np.abs(got - _sent(upright, transport)).mean() < 2
    assert np.abs(got - _sent(turned_away, transport)).mean() > 20


def test_upright_images_are_not_turned():
    raw, stored = _sideways(1)
    assert np.array_equal(decode_image(raw), stored)


# ----------------------------------------------------------------------- base64 in JSON bodies
_WRAPPED_RAW = bytes(range(256)) * 7


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("width", [76, 64])
def test_mime_wrapped_base64_accepted(newline, width):
    flat = base64.b64encode(_WRAPPED_RAW).decode()
    wrapped = newline.join(flat[i : i + width] for i in range(0, len(flat), width)) + newline
    assert media_bytes(wrapped) == _WRAPPED_RAW
    assert media_bytes("data:image/png;base64," + wrapped) == _WRAPPED_RAW
    assert base64.encodebytes(_WRAPPED_RAW).decode().split("\n")[0].__len__() == 76  # what `base64` prints
    assert media_bytes(base64.encodebytes(_WRAPPED_RAW).decode()) == _WRAPPED_RAW


def _bad_wrappings() -> list[str]:
    good = base64.encodebytes(_WRAPPED_RAW).decode()
    return [
        good.replace("\n", " \n"),  # trailing spaces
        good.replace("\n", "\t"),  # tabs instead of line breaks
        good.replace("\n", "\r"),  # bare carriage returns
        good[:100] + "\n" + good[100:],  # a break at an uneven place
        good.replace("\n", "\n\n"),  # blank lines
        good.replace("\n", "\r\n", 1),  # mixed line endings
        good[:10] + "!" + good[11:],  # a character outside the alphabet
        good[:77] + "*" * 76 + good[153:],  # a garbage line of the right width
        "aGk=\naGk=aGk=",  # a last line longer than the others
    ]


@pytest.mark.parametrize("bad", _bad_wrappings())
def test_other_whitespace_and_garbage_in_base64_refused(bad):
    with pytest.raises(MediaError, match="not valid base64"):
        media_bytes(bad)
