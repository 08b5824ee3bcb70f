"""Fusion heads: the heads this tenant may use (they answer through ``/v1/compose`` tasks ``fuse``)."""

from __future__ import annotations

from fastapi import APIRouter

from api import schemas as s
from deployments.gateway import deps, routing

router = APIRouter()


@routing.get(router, "/v1/fusion/heads", response_model=s.FusionHeadList)
async def list_fusion_heads(fusion: deps.FusionDep, tenant: deps.CurrentTenant) -> s.FusionHeadList:
    return await fusion.list_heads(tenant)
