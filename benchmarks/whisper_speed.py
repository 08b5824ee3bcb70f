"""Whisper base on this CPU: faster-whisper (CTranslate2 int8, the packaged weights) against the
transformers engine doing the same work, side by side in one run.

    python -m benchmarks.whisper_speed --out benchmarks/results/whisper_speed.json

Audio: espeak-ng sentences, each its own clip, at least 30 s in all. faster-whisper transcribes them
(greedy, language given); its real-time factor is time / audio seconds, for the clips one by
one and for the same speech as one long recording (Whisper pads every clip to a 30 s window). No transformers Whisper-base weights exist
offline, so the transformers engine runs a random-weight checkpoint of the same architecture through
mmserve's ``TransformersWhisperEngine``, forced to decode exactly as many tokens per clip as
faster-whisper produced (same audio, same decode length: speed does not depend on weight values).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from models import whisper_batch
from models.media import SAMPLE_RATE, decode_audio
from models.registry import SpeechModelSpec, load_speech
from models.speech import SpeechOptions
from tests import assets, checkpoints

SENTENCES = [
    "the quick brown fox jumps over the lazy dog and runs into the forest",
    "please send the quarterly report to the whole team before friday afternoon",
    "machine learning models are served behind a gateway that batches requests",
    "the weather today is cloudy with a chance of rain in the late evening",
    "our train leaves from platform nine at a quarter past seven tomorrow morning",
    "she bought fresh bread, two apples and a bottle of milk at the corner shop",
    "the conference starts on monday and the keynote speaker arrives on sunday",
]


def clips() -> list:
    return [decode_audio(assets.speech(s)) for s in SENTENCES]


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


OPTIONS = SpeechOptions(language="en")  # both engines skip language detection (an extra encoder pass)


def faster_whisper(audio: list) -> dict:
    engine = load_speech(SpeechModelSpec(model="whisper-base", cpu_threads=2))
    engine.transcribe(audio[0], OPTIONS)  # warm-up
    seconds, results = _timed(lambda: [engine.transcribe(a, OPTIONS) for a in audio])
    tokenizer = engine.model.hf_tokenizer
    tokens = [len(tokenizer.encode(" " + r.text).ids) for r in results]
    wer = sum(assets.wer(ref, r.text) for ref, r in zip(SENTENCES, results)) / len(SENTENCES)
    long_clip = np.concatenate(audio)  # long-form: the same speech as one recording
    long_seconds, long_result = _timed(lambda: engine.transcribe(long_clip, OPTIONS))
    detect_seconds, _ = _timed(lambda: [engine.transcribe(a, SpeechOptions()) for a in audio])
    one_pass, _ = _timed(lambda: [whisper_batch.transcribe_batch(engine, [a], [SpeechOptions()]) for a in audio])
    batched, _ = _timed(lambda: whisper_batch.transcribe_batch(engine, audio, [SpeechOptions()] * len(audio)))
    return {"seconds": seconds, "tokens": tokens, "mean_wer": wer,
            "mmserve_short_clip_path": {"one_by_one_seconds": one_pass, "all_in_one_batch_seconds": batched,
                                        "rtf_one_by_one": one_pass / (long_clip.size / SAMPLE_RATE),
                                        "note": "language detected, sharing the encoder pass"},
            "long_form": {"seconds": long_seconds, "rtf": long_seconds / (long_clip.size / SAMPLE_RATE),
                          "wer": assets.wer(" ".join(SENTENCES), long_result.text)},
            "with_language_detection_seconds": detect_seconds}


def transformers_engine(audio: list, tokens: list[int]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints.whisper_checkpoint(Path(tmp), checkpoints.WHISPER_BASE)
        engine = load_speech(SpeechModelSpec(engine="transformers", model=tmp))
    options = OPTIONS
    config = engine.model.generation_config
    total = 0.0
    for clip, n in zip(audio, tokens):
        engine.max_new_tokens, config.min_new_tokens = n, n  # exactly n decoded tokens, like faster-whisper
        if total == 0.0:
            engine.transcribe(clip, options)  # warm-up
        seconds, _ = _timed(lambda: engine.transcribe(clip, options))
        total += seconds
    return {"seconds": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    audio = clips()
    audio_seconds = sum(a.size for a in audio) / SAMPLE_RATE
    fw = faster_whisper(audio)
    hf = transformers_engine(audio, fw["tokens"])
    result = {"clips": len(audio), "audio_seconds": round(audio_seconds, 2),
              "faster_whisper_int8": {**fw, "rtf": fw["seconds"] / audio_seconds},
              "transformers_fp32": {**hf, "rtf": hf["seconds"] / audio_seconds},
              "speedup": hf["seconds"] / fw["seconds"]}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
