"""FastAPI dependencies: how a route asks for the services of the gateway replica serving it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from deployments.gateway import services as sv
from deployments.gateway.vision_language import VisionLanguage as VisionLanguageService


def _services(request: Request) -> sv.Services:
    return request.app.state.services


def _encoders(request: Request) -> sv.Encoders:
    return _services(request).encoders


def _media(request: Request) -> sv.Media:
    return _services(request).media


def _search(request: Request) -> sv.Search:
    return _services(request).search


def _fusion(request: Request) -> sv.Fusion:
    return _services(request).fusion


def _vision_language(request: Request) -> VisionLanguageService:
    return _services(request).vision_language


Services = Annotated[sv.Services, Depends(_services)]
Encoders = Annotated[sv.Encoders, Depends(_encoders)]
Media = Annotated[sv.Media, Depends(_media)]
Search = Annotated[sv.Search, Depends(_search)]
Fusion = Annotated[sv.Fusion, Depends(_fusion)]
VisionLanguage = Annotated[VisionLanguageService, Depends(_vision_language)]
