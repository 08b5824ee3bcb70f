"""Fusion heads: the heads this tenant may use (they answer through ``/v1/compose`` tasks ``fuse``)."""

from __future__ import annotations

from fastapi import APIRouter

from api import schemas as s
from deployments import tenancy
from deployments.gateway import deps, routing
from deployments.gateway.calls import call

router = APIRouter()


@routing.get(router, "/v1/fusion/heads", response_model=s.FusionHeadList)
async def list_fusion_heads(fusion: deps.Fusion) -> s.FusionHeadList:
    tenant = tenancy.current()
    cards = await call(fusion.heads().list_heads, tenant.id)
    return s.FusionHeadList(data=[s.FusionHeadCard(**c) for c in cards if tenant.may_use("head", c["id"])])
