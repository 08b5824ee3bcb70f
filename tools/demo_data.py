"""A small, real, deliberately imperfect multimodal dataset for training and testing fusion heads.

``python -m tools.demo_data OUT_DIR [--seed 0] [--per-class 40]`` writes::

    OUT_DIR/manifest.jsonl   one JSON row per example (paths relative to the manifest)
    OUT_DIR/images/*.jpg     OUT_DIR/audio/*.wav (16 kHz mono PCM16)     OUT_DIR/about.json

Row: ``{"id", "label", "split", "image"?, "text"?, "audio"?, "meta"}``. Any of image/text/audio may
be absent; every row has at least one. ``meta`` records how the row was made (source photo, crop
kind, text and speech kind, voice) for error analysis; it must not be used as a feature.

Everything comes from what installed packages ship, nothing is downloaded:

- Photos: scikit-image ``skimage.data`` (only files bundled with the wheel) and scikit-learn's
  ``load_sample_images()``. Labels and sources:
  ``animal`` = chelsea (a tabby cat), horse (a black-and-white silhouette);
  ``drink`` = coffee (a cup of coffee); ``space`` = rocket (on the launch pad), hubble_deep_field,
  moon (grey surface), astronaut (a portrait in front of a flag); ``plant`` = sklearn flower
  (a dahlia), grass (a grey texture).
- Speech: the ``espeak-ng`` binary with several English accents (en-us, en-gb, Scottish, RP,
  Caribbean, New York...), speeds 120-190 wpm, pitches 25-75, a few voice variants; resampled to
  16 kHz with up to 0.4 s of silence on each side and white noise at 10-35 dB SNR.
- Texts: short hand-written captions (below).

Each modality is informative but imperfect, so that combining them helps:

- image (missing in 15% of rows): a source photo of the label, chosen uniformly, then either a
  normal view (70%: a random crop of 35-100% of the area) or a hard crop (30%: 3-12% of the
  area, often an uninformative patch of fur, sky, grass or foam, sometimes blurred or made low
  resolution); random horizontal flip, brightness/contrast/saturation jitter, 10% greyscale, sensor
  noise, short side rescaled to 128-384 px, JPEG quality 60-95. Few source photos per label: an
  image-only model can memorise them, so read image accuracy with that in mind.
- text: 50% an informative caption of the label, 25% a vague one that names nothing ("look at this
  one"), 7% a misleading one that mentions another label's concept in passing ("had a coffee
  while taking this" under ``space``), 18% missing.
- audio: 45% a spoken description of the label (worded differently from the captions), 25% a
  generic remark ("okay, next one"), 30% missing.

Deterministic: the same seed and per_class give byte-identical files (each row draws from its own
``numpy`` generator seeded with (seed, label, index); espeak-ng is deterministic). The split is
stratified: the first 80% of each label's rows (after a seeded shuffle) are ``train``, the rest ``test``.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from models.sample_photos import SKLEARN_PHOTOS, source_photo  # noqa: F401 (the demo's sources live in models)

SAMPLE_RATE = 16_000
LABELS = ("animal", "drink", "space", "plant")
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Mix:
    """Probabilities of each kind of content per modality (the remainder of each is 'missing')."""

    image: float = 0.85
    hard_crop: float = 0.30
    text_informative: float = 0.50
    text_vague: float = 0.25
    text_misleading: float = 0.07
    audio_informative: float = 0.45
    audio_generic: float = 0.25


MIX = Mix()

# ------------------------------------------------------------------------------------------- sources
_SKIMAGE = "skimage.data"
_SKLEARN = "sklearn.datasets.load_sample_images"
SOURCES: dict[str, list[tuple[str, str, str]]] = {  # label -> [(name, origin, what it shows)]
    "animal": [
        ("chelsea", _SKIMAGE, "Chelsea, a tabby cat"),
        ("horse", _SKIMAGE, "a horse silhouette (binary)"),
    ],
    "drink": [("coffee", _SKIMAGE, "a cup of espresso on a saucer")],
    "space": [
        ("rocket", _SKIMAGE, "a rocket on its launch pad"),
        ("hubble_deep_field", _SKIMAGE, "the Hubble deep field (galaxies)"),
        ("moon", _SKIMAGE, "the lunar surface (greyscale)"),
        ("astronaut", _SKIMAGE, "astronaut Eileen Collins, portrait"),
    ],
    "plant": [("flower", _SKLEARN, "a dahlia flower"), ("grass", _SKIMAGE, "a grass texture (greyscale)")],
}

TEXTS: dict[str, list[str]] = {
    "animal": [
        "my cat napping by the window",
        "a tabby cat staring right at me",
        "look at those whiskers",
        "she purrs whenever I come home",
        "a horse standing in the field",
        "our furry friend again",
        "the kitten finally sat still for a photo",
        "a pony at the farm, just a silhouette",
    ],
    "drink": [
        "my morning coffee",
        "a fresh cup of espresso",
        "latte art at the cafe",
        "a hot drink to start the day",
        "cappuccino with a heart in the foam",
        "second cup of the day already",
        "the barista did a great job",
        "coffee break",
    ],
    "space": [
        "the rocket waiting on the launch pad",
        "galaxies through the telescope",
        "craters on the moon",
        "an astronaut in her flight suit",
        "launch day at the space center",
        "deep space, so many stars",
        "the lunar surface up close",
        "one small step",
    ],
    "plant": [
        "a flower blooming in the garden",
        "fresh green grass in the park",
        "petals after the rain",
        "my dahlia finally opened",
        "the lawn needs mowing",
        "a bloom in the flower bed",
        "spring is here, everything is growing",
        "close up of the leaves and blades of grass",
    ],
}
VAGUE_TEXTS = [
    "look at this one",
    "what do you think?",
    "saw this today",
    "another picture from my phone",
    "not sure what to say about this",
    "here it is",
    "so cool",
    "I love this",
    "check it out",
    "taken last weekend",
    "this one is my favourite",
    "guess what this is",
]
MISLEADING_TEXTS: dict[str, list[str]] = {  # mentions this label's concept, used under the other labels
    "animal": [
        "my cat walked over the keyboard while I uploaded this",
        "the dog barked the whole time I took this",
    ],
    "drink": ["had a coffee while taking this", "spilled my tea right after this shot"],
    "space": [
        "the sky was full of stars on the way home",
        "I was watching a rocket launch video before this",
    ],
    "plant": ["sent from the garden bench", "the flowers outside were nice too, but this is what I shot"],
}
SPOKEN: dict[str, list[str]] = {
    "animal": [
        "this is my cat",
        "a cat sitting quietly",
        "here is a horse",
        "the kitten is sleeping",
        "look at this cute animal",
    ],
    "drink": ["a cup of coffee", "espresso in a white cup", "hot coffee with milk", "my favourite drink"],
    "space": [
        "a rocket launch",
        "the night sky full of stars",
        "the surface of the moon",
        "an astronaut from nasa",
        "outer space",
    ],
    "plant": ["a beautiful flower", "green grass in the field", "flowers in the garden", "a plant in bloom"],
}
GENERIC_SPOKEN = [
    "here is another picture",
    "take a look at this",
    "okay, next one",
    "I took this yesterday",
    "what do you think",
    "this one is nice",
]
VOICES = [
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-us+f3",
    "en-gb+f2",
    "en-us+m3",
]


# ------------------------------------------------------------------------------------------- images
def _crop_box(rng: np.random.Generator, width: int, height: int, *, area: tuple[float, float]) -> tuple:
    frac, aspect = rng.uniform(*area), np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w = int(min(width, round(np.sqrt(frac * width * height * aspect))))
    h = int(min(height, round(np.sqrt(frac * width * height / aspect))))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return left, top, left + w, top + h


def _jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(float(rng.uniform(0.7, 1.3)))
    if rng.random() < 0.1:
        img = img.convert("L").convert("RGB")
    return img


def _degrade(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """What makes a hard crop harder: blur or a low-resolution capture."""
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 3.0))))
    if rng.random() < 0.4:
        small = (max(8, img.width // 4), max(8, img.height // 4))
        img = img.resize(small, Image.BILINEAR).resize(img.size, Image.NEAREST)
    return img


def _rescale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    short = int(rng.integers(128, 385))
    scale = short / min(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)


def _noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(0, 8), (img.height, img.width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_image(
    rng: np.random.Generator, source: str, *, hard: bool, pixels: np.ndarray | None = None
) -> bytes:
    """One augmented JPEG view of ``source`` (or of ``pixels`` when given): a normal or a hard crop,
    flipped, jittered, rescaled."""
    img = Image.fromarray(source_photo(source) if pixels is None else pixels)
    img = img.crop(_crop_box(rng, img.width, img.height, area=(0.03, 0.12) if hard else (0.35, 1.0)))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = _rescale(_jitter(img, rng), rng)
    if hard:
        img = _degrade(img, rng)
    buf = io.BytesIO()
    _noise(img, rng).save(buf, format="JPEG", quality=int(rng.integers(60, 96)))
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- speech
def espeak_exe() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is required to build the demo dataset: apt-get install espeak-ng")
    return exe


def _espeak(text: str, *, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run(
            [espeak_exe(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
            check=True,
            capture_output=True,
        )
        audio, rate = sf.read(out, dtype="float32")
    return audio, rate


def make_speech(rng: np.random.Generator, text: str, voice: str) -> bytes:
    """``text`` spoken by espeak-ng, at 16 kHz with silence padding and background noise, as WAV bytes."""
    import soundfile as sf
    from scipy.signal import resample_poly

    audio, rate = _espeak(
        text, voice=voice, speed=int(rng.integers(120, 191)), pitch=int(rng.integers(25, 76))
    )
    audio = resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32)
    pad = [np.zeros(int(rng.uniform(0, 0.4) * SAMPLE_RATE), np.float32) for _ in range(2)]
    audio = np.concatenate([pad[0], audio, pad[1]])
    noise_rms = np.sqrt(np.mean(audio**2)) / 10 ** (rng.uniform(10, 35) / 20)
    audio = np.clip(audio + rng.normal(0, noise_rms, audio.size).astype(np.float32), -1, 1)
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- rows
def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _choose_kind(rng: np.random.Generator, kinds: Sequence[tuple[str, float]]) -> str:
    """One kind by probability; 'missing' takes the remainder."""
    u, total = rng.random(), 0.0
    for kind, p in kinds:
        total += p
        if u < total:
            return kind
    return "missing"


def _text(rng: np.random.Generator, label: str) -> tuple[str, str | None]:
    kind = _choose_kind(
        rng,
        [
            ("informative", MIX.text_informative),
            ("vague", MIX.text_vague),
            ("misleading", MIX.text_misleading),
        ],
    )
    if kind == "informative":
        return kind, _pick(rng, TEXTS[label])
    if kind == "vague":
        return kind, _pick(rng, VAGUE_TEXTS)
    if kind == "misleading":
        return kind, _pick(rng, MISLEADING_TEXTS[_pick(rng, [x for x in LABELS if x != label])])
    return kind, None


def _spoken(rng: np.random.Generator, label: str) -> tuple[str, str | None]:
    kind = _choose_kind(rng, [("informative", MIX.audio_informative), ("generic", MIX.audio_generic)])
    sentence = {"informative": SPOKEN[label], "generic": GENERIC_SPOKEN}.get(kind)
    return kind, (_pick(rng, sentence) if sentence else None)


def make_row(out_dir: Path, *, seed: int, label: str, index: int) -> dict:
    """One example of ``label``: draws its contents from its own generator and writes its files."""
    rng = np.random.default_rng([seed, LABELS.index(label), index])
    row_id = f"{label}-{index:03d}"
    row: dict = {"id": row_id, "label": label}
    meta: dict = {}
    image_kind = (
        "missing" if rng.random() >= MIX.image else ("hard" if rng.random() < MIX.hard_crop else "normal")
    )
    source = _pick(rng, [name for name, _, _ in SOURCES[label]])
    text_kind, text = _text(rng, label)
    audio_kind, sentence = _spoken(rng, label)
    voice = _pick(rng, VOICES)
    if image_kind == "missing" and text is None and sentence is None:
        image_kind = "normal"  # every row keeps at least one modality
    if image_kind != "missing":
        row["image"] = _write(
            out_dir, f"images/{row_id}.jpg", make_image(rng, source, hard=image_kind == "hard")
        )
        meta.update(source=source)
    if text is not None:
        row["text"] = text
    if sentence is not None:
        row["audio"] = _write(out_dir, f"audio/{row_id}.wav", make_speech(rng, sentence, voice))
        meta.update(spoken=sentence, voice=voice)
    row["meta"] = {"image": image_kind, "text": text_kind, "audio": audio_kind, **meta}
    return row


def _write(out_dir: Path, relative: str, data: bytes) -> str:
    (out_dir / relative).write_bytes(data)
    return relative


def _splits(seed: int, per_class: int) -> list[str]:
    """Stratified split for one label: a seeded permutation, the last ``TEST_FRACTION`` is test."""
    order = np.random.default_rng([seed, 99]).permutation(per_class)
    n_test = int(round(per_class * TEST_FRACTION))
    split = ["train"] * per_class
    for i in order[per_class - n_test :]:
        split[int(i)] = "test"
    return split


# ------------------------------------------------------------------------------------------- build
def _prepare(out_dir: Path) -> None:
    """Create ``out_dir``; rebuild over an earlier demo dataset, but never over unrelated files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()) and not (out_dir / "manifest.jsonl").is_file():
        raise FileExistsError(f"{out_dir} is not empty and holds no demo dataset; choose an empty directory")
    for sub in ("images", "audio"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / sub).mkdir()


def build(
    out_dir: Path, *, seed: int = 0, per_class: int = 40, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Build the dataset in ``out_dir`` (``per_class`` rows per label) and return the manifest path."""
    if per_class < 1:
        raise ValueError("per_class must be at least 1")
    espeak_exe()
    out_dir = Path(out_dir)
    _prepare(out_dir)
    rows, split = [], _splits(seed, per_class)
    for label in LABELS:
        for index in range(per_class):
            rows.append({**make_row(out_dir, seed=seed, label=label, index=index), "split": split[index]})
            if progress:
                progress(len(rows), per_class * len(LABELS))
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    (out_dir / "about.json").write_text(
        json.dumps(about(rows, seed=seed, per_class=per_class), indent=2) + "\n", encoding="utf-8"
    )
    return manifest


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    espeak = subprocess.run([espeak_exe(), "--version"], check=True, capture_output=True, text=True).stdout
    return {
        "scikit-image": version("scikit-image"),
        "scikit-learn": version("scikit-learn"),
        "pillow": version("pillow"),
        "numpy": version("numpy"),
        "espeak-ng": espeak.split(":")[1].split()[0],
    }


def _counts(rows: list[dict]) -> dict:
    kinds = {m: {} for m in ("image", "text", "audio")}
    for row in rows:
        for m in kinds:
            kinds[m][row["meta"][m]] = kinds[m].get(row["meta"][m], 0) + 1
    return {
        "rows": len(rows),
        "per_label": {x: sum(r["label"] == x for r in rows) for x in LABELS},
        "per_split": {s: sum(r["split"] == s for r in rows) for s in ("train", "test")},
        "kinds": kinds,
    }


def about(rows: list[dict], *, seed: int, per_class: int) -> dict:
    """The dataset card: how it was built, from what, and what it is not."""
    return {
        "name": "mmserve demo fusion dataset",
        "built_by": f"python -m tools.demo_data OUT_DIR --seed {seed} --per-class {per_class}",
        "seed": seed,
        "per_class": per_class,
        "labels": list(LABELS),
        "row_format": {
            "id": "label-index",
            "label": "one of labels",
            "split": "train|test (stratified, 20% test)",
            "image": "images/<id>.jpg, optional",
            "text": "a caption, optional",
            "audio": "audio/<id>.wav, 16 kHz mono PCM16, optional",
            "meta": "how the row was made; for analysis only, never a feature",
        },
        "sources": {
            label: [{"name": n, "origin": o, "shows": s} for n, o, s in SOURCES[label]] for label in LABELS
        },
        "mix": MIX.__dict__,
        "image_augmentation": {
            "normal_crop_area": [0.35, 1.0],
            "hard_crop_area": [0.03, 0.12],
            "aspect": [0.75, 1.333],
            "hflip": 0.5,
            "brightness_contrast_saturation": [0.7, 1.3],
            "greyscale": 0.1,
            "hard_crop_extra": "blur (p 0.4, radius 1-3 px), 4x low-resolution (p 0.4)",
            "noise_sigma": [0, 8],
            "short_side_px": [128, 384],
            "jpeg_quality": [60, 95],
        },
        "speech": {
            "engine": "espeak-ng",
            "voices": VOICES,
            "speed_wpm": [120, 190],
            "pitch": [25, 75],
            "silence_pad_s": [0, 0.4],
            "noise_snr_db": [10, 35],
            "sample_rate": SAMPLE_RATE,
        },
        "texts": {"informative": TEXTS, "vague": VAGUE_TEXTS, "misleading": MISLEADING_TEXTS},
        "spoken": {"informative": SPOKEN, "generic": GENERIC_SPOKEN},
        "counts": _counts(rows),
        "versions": _versions(),
        "caveats": [
            "few source photos per label (drink has one): crops of one photo appear in train and test, so "
            "image accuracy overstates generalisation to new photos",
            "espeak-ng speech is synthetic and clean apart from the added noise",
            "captions and spoken sentences come from small fixed pools, repeated across rows",
            "misleading texts mention another label's concept in passing; labels themselves are never noisy",
            "a row's image, text and speech agree on the label but not on the instance (a caption about a "
            "horse may come with a crop of the cat)",
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo_data", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write (empty, or an earlier demo dataset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=40, help="rows per label (%(default)s)")
    args = parser.parse_args(argv)
    manifest = build(args.out_dir, seed=args.seed, per_class=args.per_class)
    counts = json.loads((args.out_dir / "about.json").read_text())["counts"]
    print(f"{manifest}: {counts['rows']} rows, {counts['per_label']}, splits {counts['per_split']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
