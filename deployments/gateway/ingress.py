"""Gateway: the HTTP ingress deployment. Each replica builds its services from the handles of the
model deployments, then serves the FastAPI app that ``create_app`` builds around them."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from config.batch import BatchArgs
from config.settings import GatewaySettings
from config.tenants import OPEN_TENANT, load_tenants
from deployments import metrics, tenancy
from deployments.gateway import calls
from deployments.gateway.admission import Admission
from deployments.gateway.app import create_app
from deployments.gateway.services import GatewayServices
from deployments.gateway.services.batches import Batches
from deployments.gateway.services.encoders import Encoders
from deployments.gateway.services.fusion import Fusion
from deployments.gateway.services.media import MediaDecoder
from deployments.gateway.services.search import Search
from deployments.gateway.services.speech import Speech
from deployments.gateway.services.vision import Vision
from deployments.gateway.services.vision_language import VisionLanguageClient
from models.embed_cache import EmbedCache

log = logging.getLogger("ray.serve")


def _directory(settings: GatewaySettings) -> tenancy.Directory | None:
    if settings.tenants_file is None:
        log.warning("no tenants file: mmserve is OPEN, every request runs as tenant '%s'", OPEN_TENANT)
        return None
    tenants = load_tenants(settings.tenants_file)
    log.info("tenants: %s", ", ".join(t.id for t in tenants))
    return tenancy.Directory.build(tenants)


def _admission(settings: GatewaySettings, quota: DeploymentHandle | None) -> Admission:
    return Admission(
        _directory(settings), quota, failures=tenancy.FailedLogins(**settings.failed_auth.model_dump())
    )


def build_services(
    vision: DeploymentHandle,
    text: DeploymentHandle,
    audio: DeploymentHandle,
    settings: GatewaySettings,
    *,
    search: DeploymentHandle | None = None,
    fusion: DeploymentHandle | None = None,
    quota: DeploymentHandle | None = None,
    vision_language: DeploymentHandle | None = None,
    batch: dict | None = None,
) -> GatewayServices:
    """``batch``: ``{"args": the batch section, "models": {"vision", "text", "speech": spec}}`` (the Batch
    API answers 503 without it)."""
    calls.configure_quarantine(ttl_s=settings.poison_quarantine_s, capacity=settings.poison_quarantine_size)
    metrics.configure(tenant_label=settings.metrics_tenant_label)
    media = MediaDecoder(settings.limits(), settings.image_transport)
    encoders = Encoders(
        {"image": vision, "text": text, "audio": audio}, media, EmbedCache(capacity=settings.embed_cache_size)
    )
    optional = {
        "SearchIndex": search,
        "FusionHead": fusion,
        "QuotaKeeper": quota,
        "VisionLanguage": vision_language,
    }
    shared_root = settings.allowed_root if settings.tenants_file is None else None  # tenants name their own
    speech = Speech(encoders)
    return GatewayServices(
        settings=settings,
        encoders=encoders,
        vision=Vision(encoders),
        speech=speech,
        search=Search(search, encoders, speech, shared_root),
        fusion=Fusion(fusion, encoders),
        admission=_admission(settings, quota),
        vision_language=VisionLanguageClient(vision_language, media),
        batches=_batches(batch, encoders, settings),
        optional={name: h for name, h in optional.items() if h is not None},
    )


def _batches(batch: dict | None, encoders: Encoders, settings: GatewaySettings) -> Batches:
    if batch is None or not batch["args"].get("enabled", True):
        return Batches(None, encoders, settings.limits(), {})
    return Batches(BatchArgs.model_validate(batch["args"]), encoders, settings.limits(), batch["models"])


@serve.deployment(name="Gateway")
@serve.ingress()
class Gateway:
    def __init__(
        self,
        vision: DeploymentHandle,
        text: DeploymentHandle,
        audio: DeploymentHandle,
        settings: dict | None = None,
        batch: dict | None = None,
        **optional: DeploymentHandle | None,
    ) -> None:
        self.services = build_services(
            vision, text, audio, GatewaySettings.model_validate(settings or {}), batch=batch, **optional
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.services)
