"""Batched Whisper for short clips (<= 30 s) on CTranslate2: one encoder pass for the whole batch,
shared by language identification and a batched greedy decode with timestamps.

faster-whisper's ``transcribe`` handles one clip at a time and, when it must detect the language,
encodes the first window twice; for short clips from many requests this path does neither.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from models.media import SAMPLE_RATE
from models.speech import CHUNK_SECONDS, Segment, SpeechOptions, Transcript

TIME_STEP = 0.02  # seconds per timestamp token


def fits(audio: np.ndarray, options: SpeechOptions) -> bool:
    """Greedy decoding of one window without a text prompt: what this path does (CTranslate2 needs
    <|startoftranscript|> at the same position across a batch); other requests go clip by clip."""
    return (audio.size <= CHUNK_SECONDS * SAMPLE_RATE and options.temperature == 0.0 and options.beam_size == 1
            and not options.prompt and not options.word_timestamps)


def _languages(ct2, encoded, options: Sequence[SpeechOptions], multilingual: bool) -> list[tuple[str, float]]:
    if not multilingual:
        return [("en", 1.0)] * len(options)
    detected = ct2.detect_language(encoded)
    return [(o.language, 1.0) if o.language else (d[0][0][2:-2], float(d[0][1])) for o, d in zip(options, detected)]




def _segments(tokenizer, ids: list[int], duration: float, *, avg_logprob: float,
              no_speech_prob: float) -> list[Segment]:
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
    return [Segment(id=i, start=round(s, 3), end=round(min(e, duration), 3), text=text, avg_logprob=avg_logprob,
                    no_speech_prob=no_speech_prob) for i, (s, e, text) in enumerate(texts)]


def transcribe_batch(engine, clips: Sequence[np.ndarray], options: Sequence[SpeechOptions]) -> list[Transcript]:
    """``engine`` is a ``FasterWhisperEngine``; every clip must satisfy ``fits``."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_ctranslate2_storage

    ct2 = engine.model.model
    features = np.stack([engine._features(c) for c in clips])
    encoded = ct2.encode(get_ctranslate2_storage(features), to_cpu=False)
    languages = _languages(ct2, encoded, options, engine.multilingual)

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
        segs = _segments(tokenizer_for(opt.task, lang), ids, duration, avg_logprob=logprob,
                         no_speech_prob=result.no_speech_prob)
        out.append(Transcript(text=" ".join(s.text for s in segs).strip(), language=lang,
                              language_probability=round(prob, 4), duration=duration, task=opt.task, segments=segs))
    return out
