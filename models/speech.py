"""Speech backends: Whisper transcription / translation and pooled-encoder audio embeddings.

Contract (``SpeechEngine``): ``model_id``, ``multilingual``, ``languages``, ``dim``,
``transcribe(audio, options) -> Transcript``, ``embed(list of audio) -> [B, dim]``, ``warmup()``.
Audio is mono float32 at 16 kHz (see ``models.media``); options and transcripts are plain data
(``models.transcript``).

Token-level features (for cross-modal attention fusion): ``token_dim`` and ``tokens(clips)``, one
``(T_i, token_dim)`` float32 array per clip: the encoder states over the frames that hold real audio,
average-pooled in windows of ``AUDIO_TOKEN_FRAMES`` (0.6 s), so at most ``MAX_AUDIO_TOKENS`` (50) per
30 s window and more tokens for longer clips. ``embed_and_tokens(clips)`` returns both from one
encoder pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from models import whisper_batch
from models.errors import Incompatible, InvalidInput
from models.media import SAMPLE_RATE
from models.transcript import CHUNK_SECONDS, Segment, SpeechOptions, Transcript, Word

ENCODER_FRAMES = 1500  # encoder positions per 30 s window (mel hop 10 ms, conv stride 2)
MAX_AUDIO_TOKENS = 50
AUDIO_TOKEN_FRAMES = ENCODER_FRAMES // MAX_AUDIO_TOKENS  # 30 encoder frames = 0.6 s per audio token


class SpeechEngine(Protocol):
    model_id: str
    multilingual: bool
    languages: list[str]
    dim: int

    def transcribe(self, audio: np.ndarray, options: SpeechOptions) -> Transcript: ...

    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray: ...

    def warmup(self) -> None: ...


class TokenSpeechEngine(SpeechEngine, Protocol):
    """A speech engine that also exposes its token-level encoder features."""

    token_dim: int

    def tokens(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def embed_and_tokens(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]: ...


def stream_segments(engine: SpeechEngine, audio: np.ndarray, options: SpeechOptions) -> Iterator[Segment]:
    """The segments of ``audio``'s transcript in order, each as soon as the engine decoded it (on the
    recording's clock, ids from 0); an engine without ``stream`` yields its whole transcript's."""
    stream = getattr(engine, "stream", None)
    if stream is not None:
        return stream(audio, options)
    check_options(engine, options)
    return iter(engine.transcribe(audio, options).segments)


def batchable(engine: SpeechEngine, audio: np.ndarray, options: SpeechOptions) -> bool:
    """Whether ``audio`` may share one batched encoder + decoder pass with other clips
    (``whisper_batch.transcribe_batch``): faster-whisper, one window, greedy and unprompted."""
    return isinstance(engine, FasterWhisperEngine) and whisper_batch.fits(audio, options)


def transcribe_many(
    engine: SpeechEngine, clips: Sequence[np.ndarray], options: Sequence[SpeechOptions]
) -> list[Transcript]:
    """Each clip's transcript, in order: the ``batchable`` ones in one batched pass, the others clip by
    clip, as the AudioModel answers them online (a bulk caller's way to the same results). The options
    must have passed ``check_options``."""
    out: list[Transcript | None] = [None] * len(clips)
    shared = [i for i, (c, o) in enumerate(zip(clips, options)) if batchable(engine, c, o)]
    if shared:
        found = whisper_batch.transcribe_batch(
            engine, [clips[i] for i in shared], [options[i] for i in shared]
        )
        for i, transcript in zip(shared, found):
            out[i] = transcript
    for i, (clip, opts) in enumerate(zip(clips, options)):
        if out[i] is None:
            out[i] = engine.transcribe(clip, opts)
    return [t for t in out if t is not None]


def check_options(engine: SpeechEngine, options: SpeechOptions) -> None:
    """Refuse what the model cannot do, as the caller's error rather than a crash inside decoding."""
    if options.task == "translate" and not engine.multilingual:
        raise Incompatible(f"model '{engine.model_id}' is English-only and cannot translate", param="model")
    if options.language is not None and options.language not in engine.languages:
        raise InvalidInput(
            f"language '{options.language}' is not supported by '{engine.model_id}'", param="language"
        )
    if not 0.0 <= options.temperature <= 1.0:
        raise InvalidInput("temperature must be between 0 and 1", param="temperature")
    if options.word_timestamps and not getattr(engine, "aligns_words", False):
        raise Incompatible(
            f"model '{engine.model_id}' gives no word timestamps (use engine faster-whisper)",
            param="timestamp_granularities",
        )


def real_frames(clip: np.ndarray) -> int:
    """Encoder positions (50 per second) that hold the clip's audio, within its first 30 s window."""
    frames = int(np.ceil(min(len(clip), CHUNK_SECONDS * SAMPLE_RATE) / SAMPLE_RATE * 50))
    return max(frames, 1)


def pooled(states: np.ndarray, clips: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of encoder states over the frames that hold real audio, L2-normalised."""
    out = np.empty((len(clips), states.shape[-1]), dtype=np.float32)
    for i, clip in enumerate(clips):
        out[i] = states[i, : real_frames(clip)].mean(axis=0)
    return out / np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-9)


def token_pooled(
    states: np.ndarray, clips: Sequence[np.ndarray], *, frames_per_token: int = AUDIO_TOKEN_FRAMES
) -> list[np.ndarray]:
    """Encoder states over each clip's real frames, averaged in windows of ``frames_per_token``
    (the last window may be shorter): ``ceil(frames / frames_per_token)`` tokens per clip."""
    out = []
    for i, clip in enumerate(clips):
        real = states[i, : real_frames(clip)].astype(np.float32)
        starts = np.arange(0, len(real), frames_per_token)
        counts = np.diff(np.append(starts, len(real)))[:, None]
        out.append(np.ascontiguousarray(np.add.reduceat(real, starts, axis=0) / counts, dtype=np.float32))
    return out


class _EncoderOutputs:
    """Audio embeddings and tokens from an engine's ``_states(clips)`` (encoder states, batch-first)."""

    def _states(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        return pooled(self._states(clips), clips)

    def tokens(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        return token_pooled(self._states(clips), clips)

    def embed_and_tokens(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """``embed(clips)`` and ``tokens(clips)`` from one encoder pass."""
        states = self._states(clips)
        return pooled(states, clips), token_pooled(states, clips)


class FasterWhisperEngine(_EncoderOutputs):
    """Whisper on CTranslate2 via faster-whisper (int8 on CPU, float16 on CUDA by default).

    ``long_audio_batch_size`` > 0: audio over 30 s decoded greedily without a prompt goes through
    ``whisper_batch.transcribe_long`` (VAD spans, that many per batch); 0 = faster-whisper's
    sequential sliding window for all audio."""

    aligns_words = True

    def __init__(self, model, *, model_id: str, long_audio_batch_size: int = 0):
        self.model = model
        self.model_id = model_id
        self.long_audio_batch_size = long_audio_batch_size
        self.long_audio_calls = 0  # transcriptions the batched long-audio path answered
        self.multilingual = bool(model.model.is_multilingual)
        self.languages = list(model.supported_languages)
        self.dim = int(self.embed([np.zeros(SAMPLE_RATE, dtype=np.float32)]).shape[-1])
        self.token_dim = self.dim

    @classmethod
    def load(
        cls,
        path,
        *,
        model_id: str,
        device: str = "cpu",
        compute_type: str = "default",
        cpu_threads: int = 0,
        long_audio_batch_size: int = 0,
    ):
        from faster_whisper import WhisperModel

        model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        return cls(model, model_id=model_id, long_audio_batch_size=long_audio_batch_size)

    def transcribe(self, audio: np.ndarray, options: SpeechOptions) -> Transcript:
        check_options(self, options)
        if self.long_audio_batch_size and whisper_batch.fits_long(audio, options):
            result = whisper_batch.transcribe_long(
                self, audio, options, batch_size=self.long_audio_batch_size
            )
            if result is not None:
                self.long_audio_calls += 1
                return result
        return self._transcribe_sequential(audio, options)

    def stream(self, audio: np.ndarray, options: SpeechOptions) -> Iterator[Segment]:
        """Segments as they are decoded: long greedy audio one VAD span (then one batch of spans) at
        a time, the rest as faster-whisper's sliding window finishes each segment. Decoding goes no
        further than the segments asked for: closing or dropping the iterator stops it."""
        check_options(self, options)
        from models import whisper_batch  # it builds on this module

        if self.long_audio_batch_size and whisper_batch.fits_long(audio, options):
            return whisper_batch.stream_long(self, audio, options, batch_size=self.long_audio_batch_size)
        return self.sliding(audio, options)

    def sliding(self, audio: np.ndarray, options: SpeechOptions) -> Iterator[Segment]:
        """faster-whisper's sliding window, each segment as it is decoded."""
        segments, _ = self._decode(audio, options)
        for i, s in enumerate(segments):
            yield _segment(i, s)

    def _decode(self, audio: np.ndarray, options: SpeechOptions):
        """faster-whisper's lazy segments (decoded as iterated) and its transcription info."""
        return self.model.transcribe(
            audio,
            task=options.task,
            language=options.language,
            initial_prompt=options.prompt,
            temperature=options.temperature,
            beam_size=options.beam_size,
            word_timestamps=options.word_timestamps,
        )

    def _transcribe_sequential(self, audio: np.ndarray, options: SpeechOptions) -> Transcript:
        segments, info = self._decode(audio, options)
        segments = list(segments)
        segs = [_segment(i, s) for i, s in enumerate(segments)]  # ids from 0, as OpenAI numbers them
        words = (
            [
                Word(
                    word=w.word.strip(),
                    start=round(w.start, 3),
                    end=round(w.end, 3),
                    probability=round(w.probability, 4),
                )
                for s in segments
                for w in (s.words or [])
            ]
            if options.word_timestamps
            else None
        )
        return Transcript(
            text=" ".join(s.text for s in segs).strip(),
            language=info.language,
            language_probability=round(info.language_probability, 4),
            duration=info.duration,
            task=options.task,
            segments=segs,
            words=words,
        )

    def _features(self, clip: np.ndarray) -> np.ndarray:
        window = np.zeros(CHUNK_SECONDS * SAMPLE_RATE, dtype=np.float32)
        head = clip[: window.size]
        window[: head.size] = head
        return self.model.feature_extractor(window)[:, : self.model.feature_extractor.nb_max_frames]

    def _encode(self, features: np.ndarray) -> np.ndarray:
        from faster_whisper.transcribe import get_ctranslate2_storage

        batch = features if features.ndim == 3 else features[None]
        return np.asarray(
            self.model.model.encode(get_ctranslate2_storage(batch), to_cpu=True), dtype=np.float32
        )

    def _states(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        return self._encode(np.stack([self._features(c) for c in clips]))

    def warmup(self) -> None:
        tone = (0.1 * np.sin(np.arange(SAMPLE_RATE) * 2 * np.pi * 440 / SAMPLE_RATE)).astype(np.float32)
        self.transcribe(tone, SpeechOptions())
        self.embed([tone])


def _segment(index: int, s) -> Segment:
    """One of faster-whisper's segments as ours."""
    return Segment(
        id=index,
        start=round(s.start, 3),
        end=round(s.end, 3),
        text=s.text.strip(),
        avg_logprob=s.avg_logprob,
        no_speech_prob=s.no_speech_prob,
    )


class TransformersWhisperEngine(_EncoderOutputs):
    """``WhisperForConditionalGeneration`` (hub id or local directory); 30-second windows, one
    segment per window."""

    max_new_tokens = 200  # per 30 s window; Whisper's decoder holds 448 positions

    def __init__(self, *, model, processor, model_id: str, device: str):
        self.model, self.processor = model.to(device).eval(), processor
        self.model_id, self.device = model_id, device
        lang_to_id = getattr(model.generation_config, "lang_to_id", None) or {}
        self.languages = [tok.strip("<|>") for tok in lang_to_id]
        self.multilingual = bool(getattr(model.generation_config, "is_multilingual", len(self.languages) > 1))
        self.dim = model.config.d_model
        self.token_dim = model.config.d_model

    @classmethod
    def load(cls, path, *, model_id: str, device: str = "cpu"):
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        model = WhisperForConditionalGeneration.from_pretrained(str(path))
        return cls(
            model=model, processor=AutoProcessor.from_pretrained(str(path)), model_id=model_id, device=device
        )

    def _features(self, clips: Sequence[np.ndarray]) -> torch.Tensor:
        feats = self.processor.feature_extractor(list(clips), sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return feats["input_features"].to(self.device, dtype=next(self.model.parameters()).dtype)

    def transcribe(self, audio: np.ndarray, options: SpeechOptions) -> Transcript:
        check_options(self, options)
        step = CHUNK_SECONDS * SAMPLE_RATE
        windows = [audio[i : i + step] for i in range(0, max(len(audio), 1), step)]
        language, probability = (
            (options.language, 1.0) if options.language else self._detect_language(windows[0])
        )
        segs = [self._decode_window(w, i, step, language, options) for i, w in enumerate(windows)]
        return Transcript(
            text=" ".join(s.text for s in segs).strip(),
            language=language,
            language_probability=probability,
            duration=round(len(audio) / SAMPLE_RATE, 3),
            task=options.task,
            segments=segs,
        )

    def _detect_language(self, window: np.ndarray) -> tuple[str, float]:
        """The most likely language of ``window`` and its probability among the model's languages
        (the same argmax as ``WhisperForConditionalGeneration.detect_language``)."""
        if not self.multilingual:
            return "en", 1.0
        config = self.model.generation_config
        start = torch.full((1, 1), config.decoder_start_token_id, dtype=torch.long, device=self.device)
        lang_ids = torch.tensor(list(config.lang_to_id.values()), device=self.device)
        features = self._features([window])
        with torch.inference_mode():
            logits = self.model(input_features=features, decoder_input_ids=start, use_cache=False).logits
        probs = logits[0, -1, lang_ids].float().softmax(-1)
        best = int(probs.argmax())
        return self.languages[best], round(float(probs[best]), 4)

    def _decode_window(self, window, index: int, step: int, language: str, options: SpeechOptions) -> Segment:
        features = self._features([window])
        kwargs = {"task": options.task, "language": language} if self.multilingual else {}
        if options.temperature > 0:
            kwargs.update(do_sample=True, temperature=options.temperature)
        if options.prompt:
            kwargs["prompt_ids"] = torch.tensor(
                self.processor.get_prompt_ids(options.prompt), device=self.device
            )
        with torch.inference_mode():
            ids = self.model.generate(
                features, num_beams=options.beam_size, max_new_tokens=self.max_new_tokens, **kwargs
            )
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
        if options.prompt and text.startswith(options.prompt.strip()):
            text = text[len(options.prompt.strip()) :].strip()
        start = index * step / SAMPLE_RATE
        return Segment(id=index, start=start, end=round(start + len(window) / SAMPLE_RATE, 3), text=text)

    def _states(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        features = self._features([c[: CHUNK_SECONDS * SAMPLE_RATE] for c in clips])
        with torch.inference_mode():
            return self.model.model.encoder(features).last_hidden_state.float().cpu().numpy()

    def warmup(self) -> None:
        self.embed([np.zeros(SAMPLE_RATE, dtype=np.float32)])
