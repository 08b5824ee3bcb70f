"""Whisper base on this CPU: long audio, short clips under concurrency, the encoder's compute
types, and faster-whisper against the transformers engine; the targets printed met or missed.

    python -m benchmarks.whisper_speed --out benchmarks/results/whisper_speed.json
    python -m benchmarks.whisper_speed --parts long      # one part: long short encoder engines

Audio: distinct espeak-ng sentences (``tests/speech_corpus.py``), no clip used twice in a part.

- ``long``: ~60 s recordings, each the concatenation of 14-15 sentences, in two voices. Each is
  transcribed by faster-whisper's sequential sliding window and by mmserve's batched long-audio
  path (``FasterWhisperEngine`` with ``long_audio_batch_size``: Silero VAD chunks <= 30 s decoded as
  one batch), greedy, language given. Targets: RTF <= 0.05 (mean over the recordings), and the batched
  WER over all the recordings' words no worse than the sequential one. Guard: the engine's counter
  of batched long-audio calls.
- ``short``: the AudioModel deployment (whisper-base, 2 CPU threads) in a local Ray, sent c = 1, 4 and
  8 concurrent transcriptions (5 s clips, language detected), with ``max_batch_size`` 1 (the CPU
  default) and 8 (the batched short-clip path: one encoder pass shared by language ID and a
  batched decode). RTF per clip = a request's latency / its clip's length (median); throughput
  RTF = wall time / audio seconds. Guard: the replica's batch counters.
- ``encoder``: the Whisper-base encoder (one 30 s window, batch 1 and 4) through CTranslate2 at each
  compute type the CPU build offers; int8_bfloat16 and bfloat16 are tried and reported as what
  CTranslate2 made of them.
- ``engines``: faster-whisper int8 against mmserve's transformers engine on the same clips. No
  transformers Whisper-base weights exist offline, so that engine runs a random-weight checkpoint of
  the same architecture, forced to decode exactly as many tokens per clip as faster-whisper did
  (speed does not depend on weight values).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from models.media import SAMPLE_RATE
from models.registry import SpeechModelSpec, load_speech
from models.speech import SpeechOptions
from tests import assets, checkpoints, speech_corpus

TARGET_RTF = 0.05
LONG_BATCH = 8
PARTS = ("long", "short", "encoder", "engines")
LONG_OPTIONS = SpeechOptions(language="en")  # greedy, unprompted: what the batched long-audio path takes


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """Word errors and reference words, after the same normalisation as ``assets.wer``."""
    import jiwer

    def norm(x: str) -> str:
        return "".join(c for c in x.lower() if c.isalnum() or c.isspace())

    out = jiwer.process_words(norm(reference), norm(hypothesis))
    return out.substitutions + out.deletions + out.insertions, len(norm(reference).split())


# ----------------------------------------------------------------------------------------- long audio
def long_audio(voices: list[str]) -> dict:
    engine = load_speech(
        SpeechModelSpec(model="whisper-base", cpu_threads=2, long_audio_batch_size=LONG_BATCH)
    )
    engine.transcribe(speech_corpus.clip(speech_corpus.SENTENCES[0]), LONG_OPTIONS)  # warm-up
    rows = []
    for voice in voices:
        for rec in speech_corpus.long_recordings(60.0, 3, voice):
            row = {"voice": voice, "seconds": round(rec.seconds, 2), "words": len(rec.reference.split())}
            for path, batch in (("sequential", 0), ("batched", LONG_BATCH)):
                engine.long_audio_batch_size = batch
                calls = engine.long_audio_calls
                seconds, result = _timed(lambda: engine.transcribe(rec.audio, LONG_OPTIONS))
                errors, words = _errors(rec.reference, result.text)
                row[path] = {
                    "seconds": round(seconds, 3),
                    "rtf": round(seconds / rec.seconds, 4),
                    "errors": errors,
                    "batched_calls": engine.long_audio_calls - calls,
                }
            rows.append(row)
    return _long_summary(rows)


def _long_summary(rows: list[dict]) -> dict:
    words = sum(r["words"] for r in rows)
    out = {"recordings": rows, "words": words}
    for path in ("sequential", "batched"):
        out[path] = {
            "mean_rtf": round(statistics.mean(r[path]["rtf"] for r in rows), 4),
            "wer": round(sum(r[path]["errors"] for r in rows) / words, 4),
        }
    out["speedup"] = round(out["sequential"]["mean_rtf"] / out["batched"]["mean_rtf"], 2)
    out["guard"] = (
        []
        if (all(r["batched"]["batched_calls"] == 1 and r["sequential"]["batched_calls"] == 0 for r in rows))
        else ["the batched long-audio path did not run exactly once per recording"]
    )
    return out


# ---------------------------------------------------------------------------------------- short clips
def _requests(c: int, minimum: int) -> int:
    """At least ``minimum`` requests and two rounds, in whole rounds of ``c``."""
    return c * max(2, -(-minimum // c))


def short_clips(concurrency: list[int], batch_sizes: list[int], minimum: int) -> dict:
    from ray import serve

    from deployments.audio import AudioModel
    from graphs import local_ray

    voices = ("en-us", "en-gb", "en-us+f3")
    pool = [(s, v) for v in voices for s in speech_corpus.SENTENCES]
    needed = len(batch_sizes) * sum(_requests(c, minimum) for c in concurrency)
    if needed > len(pool):
        raise ValueError(f"{needed} distinct clips needed, {len(pool)} in the corpus")
    clips = [(s, speech_corpus.clip(s, v)) for s, v in pool[:needed]]
    spec = SpeechModelSpec(model="whisper-base", cpu_threads=2).model_dump()
    context = local_ray.start(num_cpus=2, log_to_driver=False)
    out = {}
    try:
        for batch in batch_sizes:
            config = {"max_batch_size": batch, "batch_wait_timeout_s": 0.05 if batch > 1 else 0.0}
            deployment = AudioModel.options(
                user_config=config, max_ongoing_requests=16, ray_actor_options={"num_cpus": 1}
            )
            handle = serve.run(deployment.bind(spec), name="whisper", route_prefix=None)
            for c in concurrency:
                n = _requests(c, minimum)
                take, clips = clips[:n], clips[n:]
                out[f"batch{batch}_c{c}"] = asyncio.run(_drive(handle, take, c))
            serve.delete("whisper")
    finally:
        serve.shutdown()
        local_ray.stop(context)
    return out


async def _drive(handle, clips: list[tuple[str, np.ndarray]], concurrency: int) -> dict:
    """``len(clips) / concurrency`` rounds of ``concurrency`` simultaneous transcriptions."""
    options = {"task": "transcribe", "language": None}
    before = await handle.batch_stats.remote()
    latencies, errors, words = [], 0, 0

    async def one(sentence: str, clip: np.ndarray) -> None:
        nonlocal errors, words
        start = time.perf_counter()
        result = await handle.transcribe.remote(clip, options)
        latencies.append((time.perf_counter() - start) / (clip.size / SAMPLE_RATE))
        e, w = _errors(sentence, result["text"])
        errors, words = errors + e, words + w

    started = time.perf_counter()
    for i in range(0, len(clips), concurrency):
        await asyncio.gather(*(one(s, c) for s, c in clips[i : i + concurrency]))
    wall = time.perf_counter() - started
    after = await handle.batch_stats.remote()
    sizes = _batch_delta(before.get("transcribe", {}), after.get("transcribe", {}))
    ran = sum(size * n for size, n in sizes.items())
    return {
        "requests": len(clips),
        "rtf_per_clip_median": round(statistics.median(latencies), 4),
        "throughput_rtf": round(wall / (sum(c.size for _, c in clips) / SAMPLE_RATE), 4),
        "wer": round(errors / words, 4),
        "batch_sizes": sizes,
        "guard": []
        if ran == len(clips)
        else [f"the replica's batches held {ran} clips for {len(clips)} requests"],
    }


def _batch_delta(before: dict, after: dict) -> dict[int, int]:
    return {int(k): after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


# -------------------------------------------------------------------------------------------- encoder
def encoder_compute_types(repeats: int = 5) -> dict:
    import ctranslate2
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import get_ctranslate2_storage

    from models import packaged

    path = packaged.whisper_dir(packaged.WHISPER_BASE, Path(SpeechModelSpec().cache_dir).expanduser())
    clip = speech_corpus.clip(speech_corpus.SENTENCES[-1])
    out = {
        "cpu_build_offers": sorted(ctranslate2.get_supported_compute_types("cpu")),
        "cpu_flags": sorted(
            f for f in _cpu_flags() if f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "amx_int8")
        ),
    }
    for asked in ("int8", "int8_float32", "float32", "int8_bfloat16", "bfloat16"):
        try:
            model = WhisperModel(str(path), device="cpu", compute_type=asked, cpu_threads=2)
        except ValueError as exc:
            out[asked] = {"error": str(exc)}
            continue
        features = model.feature_extractor(np.pad(clip, (0, 30 * SAMPLE_RATE - clip.size)))[:, :3000]
        row = {"ran_as": model.model.compute_type}
        for batch in (1, 4):
            storage = get_ctranslate2_storage(np.stack([features] * batch))
            model.model.encode(storage, to_cpu=True)  # warm-up
            times = [
                _timed(lambda m=model, s=storage: m.model.encode(s, to_cpu=True))[0] for _ in range(repeats)
            ]
            row[f"batch{batch}_ms_per_window"] = round(statistics.median(times) / batch * 1000, 1)
        out[asked] = row
        del model
    return out


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


# -------------------------------------------------------------------------------------------- engines
ENGINE_SENTENCES = speech_corpus.SENTENCES[-7:]


def engines() -> dict:
    audio = [speech_corpus.clip(s) for s in ENGINE_SENTENCES]
    seconds_of_audio = sum(a.size for a in audio) / SAMPLE_RATE
    options = SpeechOptions(language="en")
    fw = load_speech(SpeechModelSpec(model="whisper-base", cpu_threads=2))
    fw.transcribe(audio[0], options)  # warm-up
    fw_seconds, results = _timed(lambda: [fw.transcribe(a, options) for a in audio])
    tokens = [len(fw.model.hf_tokenizer.encode(" " + r.text).ids) for r in results]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints.whisper_checkpoint(Path(tmp), checkpoints.WHISPER_BASE)
        hf = load_speech(SpeechModelSpec(engine="transformers", model=tmp))
    config, hf_seconds = hf.model.generation_config, 0.0
    for clip, n in zip(audio, tokens):
        hf.max_new_tokens, config.min_new_tokens = n, n  # exactly n decoded tokens, like faster-whisper
        if hf_seconds == 0.0:
            hf.transcribe(clip, options)  # warm-up
        hf_seconds += _timed(lambda: hf.transcribe(clip, options))[0]
    wer = statistics.mean(assets.wer(s, r.text) for s, r in zip(ENGINE_SENTENCES, results))
    return {
        "clips": len(audio),
        "audio_seconds": round(seconds_of_audio, 2),
        "faster_whisper_int8_rtf": round(fw_seconds / seconds_of_audio, 4),
        "faster_whisper_mean_wer": round(wer, 4),
        "transformers_fp32_rtf": round(hf_seconds / seconds_of_audio, 4),
        "transformers_slower_by": round(hf_seconds / fw_seconds, 2),
    }


# ----------------------------------------------------------------------------------------------- main
def verdicts(result: dict) -> list[str]:
    lines = []
    if "long" in result:
        long = result["long"]
        b, s = long["batched"], long["sequential"]
        lines.append(
            f"long audio (~60 s x {len(long['recordings'])}): batched RTF {b['mean_rtf']} "
            f"(target <= {TARGET_RTF}: {'met' if b['mean_rtf'] <= TARGET_RTF else 'missed'}); "
            f"sequential RTF {s['mean_rtf']}; {long['speedup']}x"
        )
        lines.append(
            f"long audio WER: batched {b['wer']} vs sequential {s['wer']} over {long['words']} words "
            f"(no worse: {'met' if b['wer'] <= s['wer'] else 'missed'})"
        )
    for key, row in result.get("short", {}).items():
        lines.append(
            f"short clips {key}: RTF per clip {row['rtf_per_clip_median']} "
            f"(target <= {TARGET_RTF}: {'met' if row['rtf_per_clip_median'] <= TARGET_RTF else 'missed'}), "
            f"throughput RTF {row['throughput_rtf']}, batches {row['batch_sizes']}"
        )
    for asked, row in result.get("encoder", {}).items():
        if isinstance(row, dict) and "ran_as" in row:
            lines.append(
                f"encoder {asked} (ran as {row['ran_as']}): {row['batch1_ms_per_window']} ms per 30 s "
                f"window at batch 1, {row['batch4_ms_per_window']} at batch 4"
            )
    return lines


def guards(result: dict) -> list[str]:
    found = list(result.get("long", {}).get("guard", []))
    for key, row in result.get("short", {}).items():
        found += [f"{key}: {g}" for g in row["guard"]]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS))
    parser.add_argument(
        "--voices", nargs="*", default=["en-us", "en-gb"], help="long part: 3 recordings per voice"
    )
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 8])
    parser.add_argument(
        "--requests",
        type=int,
        default=6,
        help="short part: at least this many per concurrency (and two rounds)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result: dict = {"cores": os.cpu_count(), "target_rtf": TARGET_RTF}
    if "long" in args.parts:
        result["long"] = long_audio(args.voices)
    if "short" in args.parts:
        result["short"] = short_clips(args.concurrency, args.batch_sizes, args.requests)
    if "encoder" in args.parts:
        result["encoder"] = encoder_compute_types()
    if "engines" in args.parts:
        result["engines"] = engines()
    result["verdicts"], result["guard_failures"] = verdicts(result), guards(result)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    if result["guard_failures"]:
        raise SystemExit(f"guard failed: {result['guard_failures']}")


if __name__ == "__main__":
    main()
