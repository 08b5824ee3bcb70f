"""The gateway's services, built once per gateway replica (``ingress.build_services``) and handed to
the routes through FastAPI dependencies (``deps``). They own every call to a model deployment: a route
or a compose step asks a service, passing the request's tenant, and the service calls the handle.

- ``media``: decoding untrusted image and audio bytes;
- ``encoders``: the image, text and audio encoders' embeddings (through the embedding cache);
- ``vision``, ``speech``: classification and zero-shot labels; transcripts and audio features;
- ``batches``: the Batch API's files and batches (run by detached Ray Data runners);
- ``search``, ``fusion``, ``vision_language``: the optional SearchIndex, FusionHead and
  VisionLanguage deployments.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ray.serve.handle import DeploymentHandle

from config.settings import GatewaySettings
from config.tenants import Tenant
from deployments.gateway.admission import Admission
from deployments.gateway.calls import call
from deployments.gateway.services.batches import Batches
from deployments.gateway.services.encoders import MODALITIES, Encoders
from deployments.gateway.services.fusion import Fusion
from deployments.gateway.services.media import MediaDecoder
from deployments.gateway.services.search import Search
from deployments.gateway.services.speech import Speech
from deployments.gateway.services.vision import Vision
from deployments.gateway.services.vision_language import VisionLanguageClient

BATCHED = ("VisionEncoder", "TextEncoder", "AudioModel", "VisionLanguage")  # deployments with batch stats


@dataclass
class GatewayServices:
    """Everything the routes of one gateway replica use."""

    settings: GatewaySettings
    encoders: Encoders
    vision: Vision
    speech: Speech
    search: Search
    fusion: Fusion
    admission: Admission
    vision_language: VisionLanguageClient
    batches: Batches
    optional: dict[str, DeploymentHandle] = field(default_factory=dict)  # name -> handle, for /readyz
    started: int = field(default_factory=lambda: int(time.time()))

    @property
    def media(self) -> MediaDecoder:
        return self.encoders.media

    def deployments(self) -> dict[str, DeploymentHandle]:
        """Every deployment this gateway calls, by name (what /readyz checks)."""
        names = ("VisionEncoder", "TextEncoder", "AudioModel")
        named = dict(zip(names, (self.encoders.handles[m] for m in MODALITIES)))
        return {**named, **self.optional}

    async def batch_stats(self, tenant: Tenant) -> dict[str, dict]:
        """Batch sizes each model replica really ran: service-wide, so for operator tenants only."""
        tenant.require_operator()
        handles = {name: h for name, h in self.deployments().items() if name in BATCHED}
        found = await asyncio.gather(*(call(h.batch_stats) for h in handles.values()))
        return dict(zip(handles, found))


async def ping(handle: DeploymentHandle, timeout_s: float) -> str:
    """One health ping of a deployment, for at most ``timeout_s``; a ping still queued for a replica
    that is not there is cancelled rather than left to pile up."""
    response = handle.ping.remote()
    try:
        return await asyncio.wait_for(_await(response), timeout_s)
    except BaseException:
        response.cancel()
        raise


async def _await(response):
    return await response
