"""Fusion heads: the FusionHead deployment, its heads routed per tenant (multiplexed ``<tenant>/<head>``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ray.serve.handle import DeploymentHandle

from api import schemas as s
from config.tenants import Tenant
from deployments.gateway.calls import call
from deployments.gateway.services.encoders import Encoders
from models.errors import Unavailable

if TYPE_CHECKING:
    from models.fusion import ModalityFeatures  # torch: the gateway never loads it


class Fusion:
    """The FusionHead deployment: the tenant's heads, and the fusion features they take."""

    def __init__(self, handle: DeploymentHandle | None, encoders: Encoders) -> None:
        self.handle, self.encoders = handle, encoders

    def heads(self) -> DeploymentHandle:
        if self.handle is None:
            raise Unavailable("fusion heads are not configured in this deployment (fusion.enabled: false)")
        return self.handle

    def head(self, tenant: Tenant, head: str) -> DeploymentHandle:
        """The FusionHead handle routed (multiplexed) to ``tenant``'s ``head``."""
        tenant.require("head", head)
        return self.heads().options(multiplexed_model_id=f"{tenant.id}/{head}")

    async def list_heads(self, tenant: Tenant) -> s.FusionHeadList:
        cards = await call(self.heads().list_heads, tenant.id)
        return s.FusionHeadList(
            data=[s.FusionHeadCard(**c) for c in cards if tenant.may_use("head", c["id"])]
        )

    async def modalities(self, tenant: Tenant, head: str) -> list[str]:
        """The modalities ``head`` was trained on (what a compose ``fuse`` task waits for)."""
        return (await call(self.head(tenant, head).describe))["modalities"]

    async def features(self, tenant: Tenant, modality: str, value) -> ModalityFeatures:
        """The features a head takes from one modality, computed by that modality's encoder."""
        return await call(self.encoders.use(tenant, modality).fusion_features, value)

    async def fuse(self, tenant: Tenant, head: str, row: dict[str, ModalityFeatures]) -> s.FusionResult:
        """``head``'s prediction from the features of the modalities present; the others are masked."""
        handle = self.head(tenant, head)
        running = {m: info.fusion_encoder() for m, info in (await self.encoders.infos()).items()}
        out = (await call(handle.predict, [row], running))[0]
        return s.FusionResult(
            head=head,
            label=out["label"],
            scores=out["scores"],
            used=sorted(row),
            missing=sorted(out["missing"]),
        )
