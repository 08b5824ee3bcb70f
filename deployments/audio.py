"""AudioModel: Whisper transcription / translation, audio features and audio embeddings.

Embeddings are batched, and so are short greedy transcriptions (<= 30 s, one encoder pass shared
by language identification and decoding); longer or sampled ones run clip by clip in a worker
thread (long greedy ones as one batch of VAD spans: ``SpeechModelSpec.long_audio_batch_size``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import numpy as np
from ray import serve

from deployments.common import BatchStats, ModelReplica, placement, replica_device
from deployments.info import EncoderInfo
from deployments.metrics import observe_model_load
from models import audio_features, whisper_batch
from models.fusion_features import FeatureExtractor, ModalityFeatures
from models.registry import SpeechModelSpec, load_speech
from models.speech import Segment, SpeechOptions, batchable, check_options, stream_segments


@serve.deployment(name="AudioModel")
class AudioModel(ModelReplica):
    _required = ("engine",)
    _batched = ("_embed_batch", "_transcribe_batch")

    def __init__(self, spec: dict) -> None:
        self.spec = SpeechModelSpec.model_validate(spec)
        self.device = replica_device()
        self.engine = load_speech(self.spec, device=self.device)
        observe_model_load("speech")
        audio_features.warmup()  # numba compiles librosa's kernels once, here rather than on a request
        self.engine.warmup()
        self.stats = BatchStats()
        self.fusion_inputs = FeatureExtractor(speech=self.engine)
        self.streams: Counter[str] = Counter()  # streamed transcriptions: started, segments, finished, left

    async def transcribe(self, audio: np.ndarray, options: dict) -> dict:
        """Short greedy clips share batched encoder + decoder passes; the rest go clip by clip."""
        opts = SpeechOptions(**options)
        check_options(self.engine, opts)  # here, so a bad request never fails a whole batch
        if batchable(self.engine, audio, opts):
            result = await self._transcribe_batch(audio, opts)
        else:
            result = await asyncio.to_thread(self.engine.transcribe, audio, opts)
        return dataclasses.asdict(result)

    async def transcribe_stream(self, audio: np.ndarray, options: dict) -> AsyncIterator[dict]:
        """The segments of one transcription as each is decoded (called with ``stream=True``); not
        batched. Decoding runs a segment at a time in a worker thread, so a caller that goes away
        (Serve cancels this generator) stops it after the segment in progress."""
        opts = SpeechOptions(**options)
        segments = stream_segments(self.engine, audio, opts)  # a bad option fails here, before any segment
        self.streams["started"] += 1
        outcome = "left"
        try:
            while (segment := await asyncio.to_thread(self._next_segment, segments)) is not None:
                yield dataclasses.asdict(segment)
            outcome = "finished"
        finally:
            self.streams[outcome] += 1

    def _next_segment(self, segments: Iterator[Segment]) -> Segment | None:
        segment = next(segments, None)
        self.streams["segments"] += segment is not None
        return segment

    def stream_stats(self) -> dict[str, int]:
        """Streamed transcriptions on this replica: started, finished, left (the caller went away)
        and the segments decoded for them."""
        return dict(self.streams)

    @serve.batch
    async def _transcribe_batch(self, clips: list[np.ndarray], options: list[SpeechOptions]) -> list:
        def forward(pairs: list) -> list:
            return whisper_batch.transcribe_batch(self.engine, [c for c, _ in pairs], [o for _, o in pairs])

        return await self._run_batch("transcribe", forward, list(zip(clips, options)))

    async def features(self, audio: np.ndarray, kinds: list[str]) -> dict[str, np.ndarray]:
        return await asyncio.to_thread(audio_features.compute_features, audio, kinds)

    @serve.batch
    async def _embed_batch(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        return await self._run_batch("embed", self.engine.embed, clips)

    async def embed(self, clip: np.ndarray) -> np.ndarray:
        return await self._embed_batch(clip)

    async def fusion_features(self, clip: np.ndarray) -> ModalityFeatures:
        """Pooled encoder embedding and encoder states over the real audio, for fusion heads."""
        return (await asyncio.to_thread(self.fusion_inputs.audio, [clip]))[0]

    def info(self) -> EncoderInfo:
        e = self.engine
        return EncoderInfo(
            modality="audio",
            model=e.model_id,
            space=f"audio:{e.model_id}",
            dim=e.dim,
            token_dim=e.token_dim,
            device=self.device,
            task_model=e.model_id,
            placement=placement(),
            batch=self.batch_config.model_dump(),
        )
