"""``build_app``: the Serve application named by ``serve_config.yaml`` (``graphs.app:build_app``)."""

from __future__ import annotations

import logging

from ray.serve import Application

from config.args import AppArgs
from config.tenants import load_tenants
from deployments import tenancy
from deployments.audio import AudioModel
from deployments.fusion import FusionHead
from deployments.gateway.ingress import Gateway
from deployments.quota import QuotaKeeper
from deployments.search import SearchIndex
from deployments.text import TextEncoder
from deployments.vision import VisionEncoder
from deployments.vision_language import VisionLanguage
from graphs import guard

log = logging.getLogger("ray.serve")


def demands(args: AppArgs) -> list[guard.ReplicaDemand]:
    return [
        guard.ReplicaDemand(
            deployment=name,
            per_replica=d.replica_request(),
            min_replicas=max(d.autoscaling.min_replicas, 1),
            max_replicas=d.autoscaling.max_replicas,
            max_per_node=d.max_replicas_per_node,
        )
        for name, d in args.deployments().items()
    ]


def build_app(args: dict | AppArgs | None = None) -> Application:
    """Validate the args, check the cluster can host them, and compose the graph."""
    cfg = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    if cfg.resource_guard == "strict":
        guard.check(demands(cfg))
    vision = VisionEncoder.options(
        **cfg.vision.serve_options(user_config=cfg.vision.batch.model_dump())
    ).bind(cfg.vision.model.model_dump(), cfg.text.model.model_dump())
    text = TextEncoder.options(**cfg.text.serve_options(user_config=cfg.text.batch.model_dump())).bind(
        cfg.text.model.model_dump()
    )
    audio = AudioModel.options(**cfg.audio.serve_options(user_config=cfg.audio.batch.model_dump())).bind(
        cfg.audio.model.model_dump()
    )
    return Gateway.options(**cfg.gateway.serve_options()).bind(
        vision, text, audio, _gateway_settings(cfg), _batch(cfg), **_optional(cfg)
    )


def _batch(cfg: AppArgs) -> dict | None:
    """What the Batch API's runners load: the batch section and the served vision, text and speech models."""
    if not cfg.batch.enabled:
        return None
    models = {
        "vision": cfg.vision.model.model_dump(),
        "text": cfg.text.model.model_dump(),
        "speech": cfg.audio.model.model_dump(),
        "vision_language": [m.model_dump() for m in cfg.vision_language.models]
        if cfg.vision_language.enabled
        else [],
    }
    return {"args": cfg.batch.model_dump(), "models": models}


def _gateway_settings(cfg: AppArgs) -> dict:
    """The gateway's settings, with the tenants file checked before deploying."""
    settings = cfg.gateway.settings
    if settings.tenants_file is not None:
        tenancy.Directory.build(
            load_tenants(settings.tenants_file)
        )  # a malformed file fails here, not in a replica
    return settings.model_dump()


def _optional(cfg: AppArgs) -> dict:
    """Search, fusion, vision-language and the shared quota keeper, when the config turns them on."""
    out = {}
    if cfg.search.enabled:
        out["search"] = SearchIndex.options(**cfg.search.serve_options()).bind(
            cfg.search.uri, cfg.search.token
        )
    if cfg.fusion.enabled:
        out["fusion"] = FusionHead.options(**cfg.fusion.serve_options()).bind(
            cfg.fusion.store, cfg.fusion.max_heads
        )
    vl = cfg.vision_language
    if vl.enabled:
        out["vision_language"] = VisionLanguage.options(
            **vl.serve_options(user_config=vl.batch.model_dump())
        ).bind([m.model_dump() for m in vl.models], vl.max_models)
    if cfg.gateway.settings.tenants_file is not None:
        out["quota"] = QuotaKeeper.bind()
    return out
