"""Batched Whisper on CTranslate2: one encoder pass for the whole batch, shared by language
identification and a batched greedy decode with timestamps.

- Short clips (<= 30 s) from many requests: faster-whisper's ``transcribe`` handles one clip at a
  time and, when it must detect the language, encodes the first window twice; this path does neither.
- Long audio (one request): Silero VAD (shipped inside faster-whisper) finds the speech; the speech
  is cut at pauses into spans of at most ``LONG_SPAN_SECONDS`` that are decoded as one batch instead
  of faster-whisper's sequential sliding window. Spans stop 5 s short of Whisper's 30 s window: on
  denser windows the decoder often leaves the last sentence out (the sequential window seeks back
  and decodes it again; a batch cannot). ``python -m benchmarks.whisper_speed --parts long``
  measures its speed and its WER against the sequential path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from models.media import SAMPLE_RATE
from models.transcript import CHUNK_SECONDS, Segment, SpeechOptions, Transcript

FIRST_SPAN_SECONDS = 8.0  # a stream's first span: its first words come after this much speech, not 25 s
TIME_STEP = 0.02  # seconds per timestamp token
LONG_SPAN_SECONDS = 25.0
MIN_SILENCE_MS = 160  # a pause this long may end a span (faster-whisper's BatchedInferencePipeline default)


def greedy_unprompted(options: SpeechOptions) -> bool:
    """What the batched decode does (CTranslate2 needs <|startoftranscript|> at the same position
    across a batch): greedy, no text prompt, no word alignment."""
    return (
        options.temperature == 0.0
        and options.beam_size == 1
        and not options.prompt
        and not options.word_timestamps
    )


def fits(audio: np.ndarray, options: SpeechOptions) -> bool:
    """One window, greedy and unprompted: the short-clip path; other requests go clip by clip."""
    return audio.size <= CHUNK_SECONDS * SAMPLE_RATE and greedy_unprompted(options)


def fits_long(audio: np.ndarray, options: SpeechOptions) -> bool:
    """More than one window, greedy and unprompted: the batched long-audio path."""
    return audio.size > CHUNK_SECONDS * SAMPLE_RATE and greedy_unprompted(options)


def _decode_features(engine, clip: np.ndarray) -> np.ndarray:
    """Log-mel of the clip padded to one window the way faster-whisper pads (after the log-mel, not
    with silent samples before it): padding with silence made the decoder close a dense window
    after its first sentence."""
    from faster_whisper.audio import pad_or_trim

    return pad_or_trim(engine.model.feature_extractor(clip)[..., :-1])


def _languages(
    ct2, encoded, options: Sequence[SpeechOptions], multilingual: bool, *, shared: bool = False
) -> list[tuple[str, float]]:
    """Each clip's language: the one asked for, else the detected one (``shared``: the first clip's)."""
    if not multilingual:
        return [("en", 1.0)] * len(options)
    detected = [(d[0][0][2:-2], float(d[0][1])) for d in ct2.detect_language(encoded)]
    if shared:
        detected = [detected[0]] * len(detected)
    return [(o.language, 1.0) if o.language else d for o, d in zip(options, detected)]


def _segments(
    tokenizer, ids: list[int], duration: float, *, avg_logprob: float, no_speech_prob: float
) -> list[Segment]:
    """Split decoded ids at timestamp tokens into timed segments (an unclosed tail ends at ``duration``)."""
    spans, text_ids, start = [], [], 0.0
    for token in ids:
        if token < tokenizer.timestamp_begin:
            text_ids.append(token)
            continue
        time = (token - tokenizer.timestamp_begin) * TIME_STEP
        if text_ids:
            spans.append((start, time, text_ids))
            text_ids = []
        start = time
    if text_ids:
        spans.append((start, duration, text_ids))
    texts = [(s, e, text) for s, e, t in spans if (text := tokenizer.decode(t).strip())]
    return [
        Segment(
            id=i,
            start=round(s, 3),
            end=round(min(e, duration), 3),
            text=text,
            avg_logprob=avg_logprob,
            no_speech_prob=no_speech_prob,
        )
        for i, (s, e, text) in enumerate(texts)
    ]


def transcribe_batch(
    engine, clips: Sequence[np.ndarray], options: Sequence[SpeechOptions], *, shared_language: bool = False
) -> list[Transcript]:
    """``engine`` is a ``FasterWhisperEngine``; every clip must satisfy ``fits``. ``shared_language``:
    clips with no language take the one detected in the first clip (spans of one recording)."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_ctranslate2_storage

    ct2 = engine.model.model
    features = np.stack([_decode_features(engine, c) for c in clips])
    encoded = ct2.encode(get_ctranslate2_storage(features), to_cpu=False)
    languages = _languages(ct2, encoded, options, engine.multilingual, shared=shared_language)

    def tokenizer_for(task: str, language: str) -> Tokenizer:
        return Tokenizer(engine.model.hf_tokenizer, engine.multilingual, task=task, language=language)

    prompts = [list(tokenizer_for(o.task, lang).sot_sequence) for o, (lang, _) in zip(options, languages)]
    results = ct2.generate(encoded, prompts, beam_size=1, return_scores=True, return_no_speech_prob=True)
    out = []
    for clip, opt, (lang, prob), result in zip(clips, options, languages, results):
        ids, duration = result.sequences_ids[0], round(clip.size / SAMPLE_RATE, 3)
        # CTranslate2's score is the length-normalised log probability; faster-whisper reports
        # cumulative / (tokens + 1), so scale it the same way for comparable avg_logprob values
        logprob = result.scores[0] * len(ids) / (len(ids) + 1)
        segs = _segments(
            tokenizer_for(opt.task, lang),
            ids,
            duration,
            avg_logprob=logprob,
            no_speech_prob=result.no_speech_prob,
        )
        out.append(
            Transcript(
                text=" ".join(s.text for s in segs).strip(),
                language=lang,
                language_probability=round(prob, 4),
                duration=duration,
                task=opt.task,
                segments=segs,
            )
        )
    return out


def speech_spans(audio: np.ndarray, *, max_seconds: float = LONG_SPAN_SECONDS) -> list[tuple[int, int]]:
    """Sample ranges that hold speech (Silero VAD), neighbours merged while a range stays within
    ``max_seconds``; the pauses between merged regions stay in, so times within a span are real."""
    return merge_regions(speech_regions(audio, max_seconds=max_seconds), int(max_seconds * SAMPLE_RATE))


def speech_regions(audio: np.ndarray, *, max_seconds: float = LONG_SPAN_SECONDS) -> list[tuple[int, int]]:
    """Silero VAD's speech ranges, in samples, none longer than ``max_seconds``."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    regions = get_speech_timestamps(
        audio, VadOptions(max_speech_duration_s=max_seconds, min_silence_duration_ms=MIN_SILENCE_MS)
    )
    return [(r["start"], r["end"]) for r in regions]


def merge_regions(regions: Sequence[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` regions joined into spans no longer than ``limit`` samples (a
    region longer than ``limit`` stays a span of its own)."""
    spans: list[tuple[int, int]] = []
    for start, end in regions:
        if spans and end - spans[-1][0] <= limit:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def transcribe_long(
    engine, audio: np.ndarray, options: SpeechOptions, *, batch_size: int
) -> Transcript | None:
    """``audio`` as VAD spans decoded ``batch_size`` at a time; None when the VAD hears no speech
    (the caller decides what silence transcribes to). The language is the first span's for all."""
    spans = speech_spans(audio)
    if not spans:
        return None
    parts: list[Transcript] = []
    for i in range(0, len(spans), batch_size):
        batch = [audio[a:b] for a, b in spans[i : i + batch_size]]
        parts += transcribe_batch(engine, batch, [options] * len(batch), shared_language=True)
        options = dataclasses.replace(options, language=parts[0].language)
    return _joined(parts, [a / SAMPLE_RATE for a, _ in spans], duration=round(audio.size / SAMPLE_RATE, 3))


def stream_long(engine, audio: np.ndarray, options: SpeechOptions, *, batch_size: int) -> Iterator[Segment]:
    """``transcribe_long`` segment by segment: a first span of at most ``FIRST_SPAN_SECONDS`` decoded
    alone (the first words come after a few seconds of speech, not after a whole batch of 25 s spans),
    then ``batch_size`` spans at a time, each batch's segments yielded as it finishes, on the
    recording's clock; no speech: the sliding window's."""
    batches = _stream_batches(speech_regions(audio), batch_size)
    if not batches:
        yield from engine.sliding(audio, options)
        return
    ids = 0
    for batch in batches:
        clips = [audio[a:b] for a, b in batch]
        parts = transcribe_batch(engine, clips, [options] * len(batch), shared_language=True)
        options = dataclasses.replace(options, language=parts[0].language)
        for part, (a, _) in zip(parts, batch):
            for s in part.segments:
                yield _moved(s, ids, a / SAMPLE_RATE)
                ids += 1


def _stream_batches(regions: list[tuple[int, int]], batch_size: int) -> list[list[tuple[int, int]]]:
    """The spans a stream decodes, batch by batch: the first short span alone, then the rest."""
    if not regions:
        return []
    first = merge_regions(regions, int(FIRST_SPAN_SECONDS * SAMPLE_RATE))[0]
    rest = merge_regions([r for r in regions if r[0] >= first[1]], int(LONG_SPAN_SECONDS * SAMPLE_RATE))
    return [[first]] + [rest[i : i + batch_size] for i in range(0, len(rest), batch_size)]


def _moved(segment: Segment, index: int, offset: float) -> Segment:
    """A span's segment numbered ``index`` and moved ``offset`` seconds, onto the recording's clock."""
    return dataclasses.replace(
        segment, id=index, start=round(segment.start + offset, 3), end=round(segment.end + offset, 3)
    )


def _joined(parts: Sequence[Transcript], offsets: Sequence[float], *, duration: float) -> Transcript:
    """One transcript from the spans' transcripts, segment times moved to the recording's clock."""
    timed = [(s, offset) for part, offset in zip(parts, offsets) for s in part.segments]
    segments = [_moved(s, i, offset) for i, (s, offset) in enumerate(timed)]
    first = parts[0]
    return Transcript(
        text=" ".join(s.text for s in segments).strip(),
        language=first.language,
        language_probability=first.language_probability,
        duration=duration,
        task=first.task,
        segments=segments,
    )
