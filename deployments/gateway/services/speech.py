"""Speech: transcription and translation with one set of options, audio features, spoken queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict

import numpy as np

from config.tenants import Tenant
from deployments.gateway.calls import call, stream
from deployments.gateway.services.encoders import Encoders
from deployments.gateway.transcription import Transcription


class Speech:
    """The AudioModel deployment: transcripts, audio features, and speech queries."""

    def __init__(self, encoders: Encoders) -> None:
        self.encoders = encoders

    async def decode(self, tenant: Tenant, raw: bytes, param: str) -> np.ndarray:
        return await self.encoders.media.decode(tenant, "audio", raw, param)

    async def transcribe(self, tenant: Tenant, audio: np.ndarray, options: Transcription) -> dict:
        """One transcription or translation of decoded audio (a ``VerboseTranscriptionResponse`` dict)."""
        return await call(self.encoders.use(tenant, "audio").transcribe, audio, asdict(options))

    def transcribe_stream(
        self, tenant: Tenant, audio: np.ndarray, options: Transcription
    ) -> AsyncIterator[dict]:
        """The transcript's segments (``TranscriptSegment`` dicts) as the AudioModel decodes them; not
        batched. Leaving the iteration stops the decoding."""
        return stream(self.encoders.use(tenant, "audio").transcribe_stream, audio, asdict(options))

    async def features(self, tenant: Tenant, audio: np.ndarray, kinds: list[str]) -> dict[str, np.ndarray]:
        """Mel, MFCC, chroma...: each kind asked once, in the order first named."""
        return await call(self.encoders.use(tenant, "audio").features, audio, list(dict.fromkeys(kinds)))

    async def spoken_query(self, tenant: Tenant, audio: np.ndarray, *, param: str) -> tuple[np.ndarray, str]:
        """Transcribe (language detected), then embed what was heard as text."""
        heard = await self.transcribe(tenant, audio, Transcription())
        return await self.encoders.embed_transcript(tenant, heard["text"], param=param), heard["text"]
