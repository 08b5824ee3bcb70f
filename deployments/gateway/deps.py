"""FastAPI dependencies: how a route asks for the request's tenant and for the services of the
gateway replica serving it. ``<Name>Dep`` is the annotation a route parameter takes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from config.tenants import Tenant
from deployments.gateway.services import GatewayServices
from deployments.gateway.services.batches import Batches
from deployments.gateway.services.encoders import Encoders
from deployments.gateway.services.fusion import Fusion
from deployments.gateway.services.search import Search
from deployments.gateway.services.speech import Speech
from deployments.gateway.services.vision import Vision
from deployments.gateway.services.vision_language import VisionLanguageClient
from deployments.tenancy import current_tenant


def _services(request: Request) -> GatewayServices:
    return request.app.state.services


def _encoders(request: Request) -> Encoders:
    return _services(request).encoders


def _vision(request: Request) -> Vision:
    return _services(request).vision


def _speech(request: Request) -> Speech:
    return _services(request).speech


def _search(request: Request) -> Search:
    return _services(request).search


def _fusion(request: Request) -> Fusion:
    return _services(request).fusion


def _vision_language(request: Request) -> VisionLanguageClient:
    return _services(request).vision_language


def _batches(request: Request) -> Batches:
    return _services(request).batches


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]  # 401 when admission bound none
ServicesDep = Annotated[GatewayServices, Depends(_services)]
EncodersDep = Annotated[Encoders, Depends(_encoders)]
VisionDep = Annotated[Vision, Depends(_vision)]
SpeechDep = Annotated[Speech, Depends(_speech)]
SearchDep = Annotated[Search, Depends(_search)]
FusionDep = Annotated[Fusion, Depends(_fusion)]
VisionLanguageDep = Annotated[VisionLanguageClient, Depends(_vision_language)]
BatchesDep = Annotated[Batches, Depends(_batches)]
