"""Probes, the model list and batch statistics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api import schemas as s
from deployments.gateway import deps, liveness, routing
from deployments.gateway.services import ping
from deployments.gateway.services.encoders import audio_encoder_id

router = APIRouter()


@routing.get(router, "/healthz", open=True, response_model=s.Health)
async def healthz() -> s.Health:
    return s.Health(status="ok")


@routing.get(router, "/readyz", open=True, response_model=s.Health, responses={503: {"model": s.Health}})
async def readyz(svc: deps.ServicesDep):
    """Pings every deployment that has not answered a call lately (``liveness``) at once, each for at
    most ``ready_timeout_s`` (< 1 s): a deployment with no replica answering in time is named in a
    503, rather than the probe hanging."""
    named = {n: h for n, h in svc.deployments().items() if not liveness.recently(h.deployment_name)}
    results = await asyncio.gather(
        *(ping(h, svc.settings.ready_timeout_s) for h in named.values()), return_exceptions=True
    )
    states = {n: "ok" for n in svc.deployments()}
    states.update({n: ("ok" if r == "ok" else f"not ready: {_why(r)}") for n, r in zip(named, results)})
    ready = all(v == "ok" for v in states.values())
    body = s.Health(status="ready" if ready else "not_ready", deployments=states)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


def _why(result) -> str:
    return (
        "no answer within the probe's timeout" if isinstance(result, TimeoutError) else type(result).__name__
    )


@routing.get(router, "/v1/models", response_model=s.ModelList)
async def models(svc: deps.ServicesDep) -> s.ModelList:
    i = await svc.encoders.infos()
    image, text, audio = i["image"], i["text"], i["audio"]
    cards = [
        s.ModelCard(id=image.task_model, modality="image", task="classification", device=image.device),
        s.ModelCard(
            id=image.model,
            modality="image",
            task="embedding",
            space=image.space,
            dim=image.dim,
            device=image.device,
            quality=image.quality,
        ),
        s.ModelCard(
            id=text.model,
            modality="text",
            task="embedding",
            space=text.space,
            dim=text.dim,
            device=text.device,
            quality=text.quality,
        ),
        s.ModelCard(id=audio.task_model, modality="audio", task="transcription", device=audio.device),
        s.ModelCard(
            id=audio_encoder_id(audio), modality="audio", task="embedding", dim=audio.dim, device=audio.device
        ),
    ]
    cards += [
        s.ModelCard(id=m.id, modality="image+text", task=m.task, device=m.device)
        for m in await svc.vision_language.models()
    ]  # none while vision_language is off
    for card in cards:
        card.created = svc.started
    return s.ModelList(data=cards)


@routing.get(router, "/v1/stats")
async def stats(svc: deps.ServicesDep, tenant: deps.CurrentTenant) -> dict:
    """Batch sizes each model replica really ran (the replica that answered, per deployment); with a
    tenants file, for operator tenants only: the counters show every tenant's traffic."""
    return await svc.batch_stats(tenant)
