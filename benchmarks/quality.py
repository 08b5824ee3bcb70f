"""Sentences as queries in the offline default's shared space (ConSE images, MiniLM text), measured.

``python -m benchmarks.quality [--no-spoken] [--json OUT]``

``python -m benchmarks.quality --backbones [--json OUT]`` measures the vision backbones instead
(EfficientNet-Lite0/1/2 under ConSE: ImageNet top-1, zero-shot, retrieval, transformed photos,
images/s; ``benchmarks.backbones``).

Gallery: the 18 photos of the demo caption set (``tools.demo_captions``), uncropped, embedded by
ConSE as served (single class prompt, top 10). Queries (``benchmarks.quality_queries``): 54
sentences, three phrasings per photo, none a caption of the set; the 18 short noun phrases (the
photos' labels); and, unless ``--no-spoken``, the 54 sentences spoken by espeak-ng with two voices
at two speeds (``en-us`` at 140 words/min, ``en-us+f3`` at 190) and transcribed by the packaged
Whisper (faster-whisper ``whisper-base``, int8), as spoken search does.

Query-side options, each a function from query strings to vectors in the same space:

- ``sentence``: MiniLM of the whole query (what is served);
- ``prompt-ensemble``: the mean of MiniLM over ConSE's prompt ensemble wrapped round the query;
- ``query-conse T/tau/mix``: the sentence projected through the ImageNet class-prompt span, as
  ConSE does for images (``models.text.ConSEQueryEncoder``; three fixed settings, none chosen here);
- ``content-words``: the query without request phrasing and function words ("show me", "find the
  picture of", "I am looking for", articles, pronouns): a stop-word filter, not a parser;
- ``content-words + query-conse``: both.

Metric: text-to-image R@1 among the 18 photos (chance 0.056). 54 sentences over 18 photos move in
steps of 0.019; differences of one or two queries are noise.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks import backbones
from benchmarks.quality_queries import SENTENCES
from models import packaged
from models.registry import TextModelSpec, VisionModelSpec, load_classifier, load_embedder, load_text
from models.runtime import l2_normalize
from models.text import ConSEQueryEncoder
from models.vision import ENSEMBLE_PROMPTS, class_name_embeddings
from tools import demo_captions

VOICES = (("en-us", 140), ("en-us+f3", 190))
QUERY_CONSE = ((5, 0.1, 0.5), (10, 0.05, 0.0), (5, 0.05, 0.25))  # (top_t, temperature, mix)
REQUEST_WORDS = frozenset(
    """a an the of in on at to for with from and or some any my me i i'm am is are be it its that
    this these those what which who show find give get want looking look see search need please
    picture pictures photo photos image images shot snapshot one you can could would""".split()
)


def content_words(query: str) -> str:
    """``query`` without request phrasing and function words (the whole query when nothing is left)."""
    words = re.findall(r"[a-z][a-z'-]*", query.lower())
    kept = [w for w in words if w not in REQUEST_WORDS]
    return " ".join(kept) or query


def r_at_1(queries: np.ndarray, gallery: np.ndarray, truth: Sequence[int]) -> float:
    return float(np.mean((queries @ gallery.T).argmax(1) == np.asarray(truth)))


def options(text, class_vectors: np.ndarray) -> dict[str, Callable[[list[str]], np.ndarray]]:
    def ensemble(queries: list[str]) -> np.ndarray:
        rows = np.stack([text.embed([t.format(q) for t in ENSEMBLE_PROMPTS]).mean(0) for q in queries])
        return l2_normalize(torch.from_numpy(rows))

    out: dict[str, Callable[[list[str]], np.ndarray]] = {
        "sentence": text.embed,
        "prompt-ensemble": ensemble,
    }
    for top_t, temperature, mix in QUERY_CONSE:
        q = ConSEQueryEncoder(
            base=text, class_embeddings=class_vectors, top_t=top_t, temperature=temperature, mix=mix
        )
        out[f"query-conse {top_t}/{temperature}/{mix}"] = q.embed
    out["content-words"] = lambda qs: text.embed([content_words(q) for q in qs])
    best = ConSEQueryEncoder(base=text, class_embeddings=class_vectors, top_t=5, temperature=0.1, mix=0.5)
    out["content-words + query-conse 5/0.1/0.5"] = lambda qs: best.embed([content_words(q) for q in qs])
    return out


def spoken(sentences: list[str]) -> dict[str, list[str]]:
    """Transcripts of ``sentences`` per voice (espeak-ng -> packaged Whisper)."""
    from models.media import decode_audio
    from models.registry import SpeechModelSpec, load_speech
    from models.transcript import SpeechOptions

    exe = shutil.which("espeak-ng")
    if not exe:
        raise SystemExit("espeak-ng is needed for the spoken queries (or pass --no-spoken)")
    engine = load_speech(SpeechModelSpec())
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "q.wav"
        for voice, speed in VOICES:
            texts = []
            for sentence in sentences:
                subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(wav), sentence], check=True)
                audio = decode_audio(wav.read_bytes())
                texts.append(engine.transcribe(audio, SpeechOptions(language="en")).text.strip())
            out[f"spoken {voice} {speed} wpm"] = texts
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--no-spoken", action="store_true", help="typed queries only")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--backbones", action="store_true", help="measure the vision backbones instead")
    backbones.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.backbones:
        return backbones.run(args)
    torch.set_num_threads(2)
    photos = list(demo_captions.PHOTOS)
    spec = VisionModelSpec()
    classifier = load_classifier(spec)
    text = load_text(TextModelSpec())
    conse = load_embedder(spec, TextModelSpec(), classifier=classifier)
    gallery = conse.embed(torch.stack([conse.preprocess(demo_captions.caption_photo(p)) for p in photos]))
    class_vectors = class_name_embeddings(text, packaged.imagenet_labels())
    sentences = [s for p in photos for s in SENTENCES[p]]
    truth = [i for i, p in enumerate(photos) for _ in SENTENCES[p]]
    sets: dict[str, tuple[list[str], list[int]]] = {
        "typed sentences": (sentences, truth),
        "noun phrases": ([demo_captions.PHOTOS[p][0] for p in photos], list(range(len(photos)))),
    }
    if not args.no_spoken:
        sets |= {name: (texts, truth) for name, texts in spoken(sentences).items()}
    table = {
        name: {qs: round(r_at_1(fn(queries), gallery, t), 3) for qs, (queries, t) in sets.items()}
        for name, fn in options(text, class_vectors).items()
    }
    columns = list(sets)
    print(f"text-to-image R@1 over {len(photos)} photos (ConSE images; chance {1 / len(photos):.3f})")
    print(f"{'option':<40}" + "".join(f"{c:>26}" for c in columns))
    for name, row in table.items():
        print(f"{name:<40}" + "".join(f"{row[c]:>26.3f}" for c in columns))
    print(f"queries: {', '.join(f'{c} {len(sets[c][0])}' for c in columns)}")
    print(f"command: python -m benchmarks.quality {' '.join(sys.argv[1:])}")
    if args.json:
        transcripts = {c: sets[c][0] for c in columns if c.startswith("spoken")}
        args.json.write_text(
            json.dumps({"argv": sys.argv[1:], "r_at_1": table, "transcripts": transcripts}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
