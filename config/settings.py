"""Settings shared by the gateway and the model deployments. Ray-free."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.media import MediaLimits

_MEDIA = MediaLimits()  # the media limits' defaults live in one place: models.media


def absolute(path: str) -> str:
    """``~`` expanded and made absolute against the directory the config is read from."""
    return str(Path(path).expanduser().resolve())


class BatchConfig(BaseModel):
    """The live-tunable part of a model deployment (its Ray Serve ``user_config``)."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(16, ge=1, le=512)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=5.0)


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_image_pixels: int = Field(_MEDIA.max_image_pixels, ge=1)
    max_image_side: int = Field(_MEDIA.max_image_side, ge=64)
    max_audio_seconds: float = Field(_MEDIA.max_audio_seconds, gt=0)
    max_upload_bytes: int = Field(_MEDIA.max_bytes, ge=1024)
    ready_timeout_s: float = Field(5.0, gt=0)
    tenants_file: str | None = Field(None, description="YAML tenants file; without one the service runs open")
    embed_cache_size: int = Field(4096, ge=0, description="image/audio embeddings kept by content hash (0: off)")
    allowed_root: str | None = Field(None, description="server-side folder that index items may name by path "
                                     "(open mode; with a tenants file each tenant names its own)")
    # Enforced while the request is read (deployments/gateway/limits.py):
    max_body_bytes: int = Field(80 * 1024 * 1024, ge=1024, description="largest request body, checked while reading")
    body_timeout_s: float = Field(30.0, gt=0, description="the whole body must arrive within this time (else 408)")
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="largest total size of the request headers (431)")
    max_requests_per_client: int = Field(32, ge=1, description="concurrent requests per client address and "
                                         "gateway replica (probes exempt)")

    @field_validator("tenants_file", "allowed_root")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        return None if path is None else absolute(path)

    def request_limits(self) -> dict:
        return {"max_body_bytes": self.max_body_bytes, "body_timeout_s": self.body_timeout_s,
                "max_header_bytes": self.max_header_bytes, "max_requests_per_client": self.max_requests_per_client}

    def limits(self) -> MediaLimits:
        return MediaLimits(max_image_pixels=self.max_image_pixels, max_image_side=self.max_image_side,
                           max_audio_seconds=self.max_audio_seconds, max_bytes=self.max_upload_bytes)
