"""Decoding of untrusted image and audio bytes, off the event loop, within the configured limits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.tenants import Tenant
from deployments.gateway.parsing import maybe_off_loop, off_loop
from deployments.info import EncoderInfo
from models.image_input import Transport, for_replica
from models.media import MediaLimits, decode_audio, decode_image

INLINE_NEVER = 1 << 62  # a size no body reaches: decoding pixels always leaves the event loop


@dataclass(frozen=True)
class MediaDecoder:
    """Image and audio bytes into what the model deployments take, for a tenant allowed the modality."""

    limits: MediaLimits
    image_transport: Transport

    async def decode(self, tenant: Tenant, modality: str, raw: bytes, param: str) -> np.ndarray:
        tenant.require_modality(modality)
        decoder = decode_image if modality == "image" else decode_audio
        return await off_loop(decoder, raw, limits=self.limits, param=param)

    async def for_encoder(self, tenant: Tenant, modality: str, raw: bytes, param: str, info: EncoderInfo):
        """What the embedding call carries: decoded audio, or an image as ``image_transport`` says
        (models/image_input.py); the limits are checked here either way. Only a header is read for
        the ``bytes`` transport: small uploads are checked on the event loop."""
        if modality != "image":
            return await self.decode(tenant, modality, raw, param)
        tenant.require_modality(modality)
        decodes = info.input_size is None or self.image_transport != "bytes"
        return await maybe_off_loop(
            INLINE_NEVER if decodes else len(raw),
            for_replica,
            raw,
            transport=self.image_transport,
            size=info.input_size,
            limits=self.limits,
            param=param,
        )
