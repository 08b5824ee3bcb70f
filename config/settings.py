"""Settings shared by the gateway and the model deployments. Ray-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from typing_extensions import Self

from models.image_input import Transport
from models.media import MediaLimits, allowed_formats

_MEDIA = MediaLimits()  # the media limits' defaults live in one place: models.media


def absolute(path: str) -> str:
    """``~`` expanded and made absolute against the directory the config is read from."""
    return str(Path(path).expanduser().resolve())


class BatchConfig(BaseModel):
    """The live-tunable part of a model deployment (its Ray Serve ``user_config``)."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(16, ge=1, le=512)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=5.0)
    stall_timeout_s: float = Field(
        300.0,
        gt=0,
        description=(
            "check_health fails the replica when work is queued or running and no batch has finished for "
            "this long (a wedged forward pass); longer than the slowest legitimate batch"
        ),
    )


# In-flight requests per gateway replica, by the modality label of the route (routing.GatewayRoute.modality).
# Each is refused (503 + Retry-After) beyond its budget, so a flood of one kind cannot starve the others.
INFLIGHT_BUDGETS = {"image": 24, "text": 32, "audio": 8, "image+text": 12, "any": 12, "none": 16}


class FailedAuthLimits(BaseModel):
    """Failed authentications one gateway replica answers 401 within ``window_s``; past a limit it
    answers 429 + Retry-After (deployments/tenancy.py ``FailedLogins``). Valid keys are never
    throttled, so these can be tight."""

    model_config = ConfigDict(extra="forbid")
    per_address: int = Field(20, ge=1, description="from one client address (a NAT or proxy is one address)")
    per_key_id: int = Field(20, ge=1, description="against one key id (mms_<id>_...), from any address")
    ceiling: int = Field(1000, ge=1, description="from all addresses together; also bounds the state kept")
    window_s: float = Field(60.0, gt=0)


class LiveSpeechLimits(BaseModel):
    """The realtime transcription WebSocket (``/v1/audio/transcriptions/ws``,
    deployments/gateway/live_speech.py): what one connection may hold and how long it may idle."""

    model_config = ConfigDict(extra="forbid")
    max_buffer_s: float = Field(
        30.0,
        gt=0,
        description="audio one utterance may buffer before the client commits it; beyond it the socket closes (1009)",
    )
    idle_timeout_s: float = Field(
        20.0, gt=0, description="a connection that sends no frame for this long is closed (4408)"
    )
    partial_every_s: float = Field(
        1.0, gt=0, description="new audio between two partial transcripts of the utterance being spoken"
    )
    max_sessions: int = Field(
        16, ge=1, description="open connections per gateway replica; beyond it the handshake is refused (503)"
    )


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_image_pixels: int = Field(_MEDIA.max_image_pixels, ge=1)
    max_image_side: int = Field(_MEDIA.max_image_side, ge=64)
    max_audio_seconds: float = Field(_MEDIA.max_audio_seconds, gt=0)
    max_upload_bytes: int = Field(_MEDIA.max_bytes, ge=1024)
    image_formats: list[str] = Field(
        default_factory=lambda: list(_MEDIA.image_formats),
        description=(
            "the image formats decoded at all, identified from their magic bytes (others: 415 naming these); "
            "a subset of JPEG, PNG, WebP, AVIF, GIF, BMP, TIFF"
        ),
    )
    audio_formats: list[str] = Field(
        default_factory=lambda: list(_MEDIA.audio_formats),
        description=(
            "the audio formats decoded at all, identified from their magic bytes (others: 415 naming these); "
            "a subset of WAV, FLAC, Ogg, MP3, M4A, WebM, AAC (ADTS), AIFF"
        ),
    )
    ready_timeout_s: float = Field(
        0.8,
        gt=0,
        le=1.0,
        description=(
            "how long /readyz waits for each deployment's ping; it answers 503 naming the slow ones, within 1 s"
        ),
    )
    tenants_file: str | None = Field(None, description="YAML tenants file; without one the service runs open")
    image_transport: Transport = Field(
        "bytes",
        description=(
            "how an image to embed crosses to VisionEncoder: bytes (header checked here, decoded there: the "
            "best measured on 2 CPU cores, python -m benchmarks.image_throughput --transports), draft (decoded "
            "here to the size the model resizes to: spares a GPU replica's CPU), input (the model's crop), array "
            "(decoded whole); models/image_input.py"
        ),
    )
    embed_cache_size: int = Field(
        4096, ge=0, description="image/audio embeddings kept by content hash (0: off)"
    )
    metrics_tenant_label: bool = Field(
        True,
        description="gateway metrics carry each tenant's id as the tenant label; false: one value, all "
        "(bounds the series when tenants are many)",
    )
    allowed_root: str | None = Field(
        None,
        description="server-side folder that index items may name by path "
        "(open mode; with a tenants file each tenant names its own)",
    )
    # Enforced while the request is read (deployments/gateway/limits.py):
    max_body_bytes: int = Field(
        80 * 1024 * 1024, ge=1024, description="largest request body, checked while reading"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="the whole body must arrive within this time (else 408)"
    )
    min_body_rate: int = Field(
        1024,
        ge=1,
        description=(
            "bytes/s a body must keep up after its first body_grace_s (else 408): a slow body cannot hold a "
            "connection for body_timeout_s"
        ),
    )
    body_grace_s: float = Field(
        5.0,
        gt=0,
        description=(
            "time a body's first bytes may take before min_body_rate applies: Serve's proxy relays a body "
            "late when the machine is saturated (1 s cut honest requests with 408 under a 200-client crowd on 2 cores)"
        ),
    )
    max_buffered_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description=(
            "request-body bytes one gateway replica buffers at once, reserved from Content-Length before "
            "reading (503 + Retry-After beyond it)"
        ),
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="largest total size of the request headers (431)"
    )
    max_requests_per_client: int = Field(
        32, ge=1, description="concurrent requests per client address and gateway replica (probes exempt)"
    )
    request_timeout_s: float = Field(
        60.0,
        gt=0,
        description=(
            "every request's deadline; a caller's X-Request-Timeout header may shorten it, never extend it (504)"
        ),
    )
    max_inflight: int = Field(
        48, ge=1, description="requests one gateway replica works on at once; more get 503"
    )
    inflight_budgets: dict[str, int] = Field(
        default_factory=lambda: dict(INFLIGHT_BUDGETS),
        description=(
            "in-flight requests per route modality (image, text, audio, image+text, any, none); beyond it: 503"
        ),
    )
    retry_after_s: float = Field(1.0, gt=0, description="the Retry-After of an overload refusal")
    failed_auth: FailedAuthLimits = Field(default_factory=FailedAuthLimits)
    live_speech: LiveSpeechLimits = Field(default_factory=LiveSpeechLimits)
    poison_quarantine_s: float = Field(
        600.0,
        gt=0,
        description=(
            "how long an input that was in flight when two model replicas died is refused with 422 "
            "poison_request (and a suspect, after one death, remembered); deployments/gateway/calls.py"
        ),
    )
    poison_quarantine_size: int = Field(
        1024, ge=1, description="suspect and held inputs kept per model method"
    )

    @field_validator("inflight_budgets")
    @classmethod
    def _known_modalities(cls, budgets: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(budgets) - set(INFLIGHT_BUDGETS))
        if unknown:
            raise ValueError(
                f"inflight_budgets: unknown modality {unknown}; known: {sorted(INFLIGHT_BUDGETS)}"
            )
        if any(n < 1 for n in budgets.values()):
            raise ValueError("inflight_budgets: every budget must be >= 1")
        return {**INFLIGHT_BUDGETS, **budgets}

    @model_validator(mode="after")
    def _one_body_fits(self) -> Self:
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must be at least max_body_bytes "
                f"({self.max_body_bytes}): a body of the largest size could never be read"
            )
        return self

    @field_validator("image_formats", "audio_formats")
    @classmethod
    def _known_formats(cls, names: list[str], info: ValidationInfo) -> list[str]:
        return list(allowed_formats(names, kind=str(info.field_name).split("_")[0]))

    @field_validator("tenants_file", "allowed_root")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        return None if path is None else absolute(path)

    def request_limits(self) -> dict[str, Any]:
        return {
            "max_body_bytes": self.max_body_bytes,
            "body_timeout_s": self.body_timeout_s,
            "max_header_bytes": self.max_header_bytes,
            "max_requests_per_client": self.max_requests_per_client,
            "min_body_rate": self.min_body_rate,
            "body_grace_s": self.body_grace_s,
            "max_buffered_bytes": self.max_buffered_bytes,
        }

    def limits(self) -> MediaLimits:
        return MediaLimits(
            max_image_pixels=self.max_image_pixels,
            max_image_side=self.max_image_side,
            max_audio_seconds=self.max_audio_seconds,
            max_bytes=self.max_upload_bytes,
            image_formats=tuple(self.image_formats),
            audio_formats=tuple(self.audio_formats),
        )
