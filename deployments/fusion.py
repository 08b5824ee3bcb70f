"""FusionHead: trained fusion heads served by id with Ray Serve model multiplexing.

Requests name a head through ``multiplexed_model_id`` = ``"<tenant>/<head>"``; Serve routes them
to a replica that already holds that head when it can, and each replica keeps an LRU of at most
``max_heads`` heads loaded from the model store (``<store>/<tenant>/<head>/``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ray import serve

from deployments.metrics import observe_model_load
from models import fusion
from models.errors import InvalidInput

log = logging.getLogger("ray.serve")


def split_model_id(model_id: str) -> tuple[str, str]:
    tenant, sep, head = model_id.partition("/")
    if not sep or not tenant or not head:
        raise InvalidInput(f"fusion head ids look like '<tenant>/<head>', not '{model_id}'", param="head")
    return tenant, head


def card(meta: fusion.HeadMeta) -> dict:
    return {
        "id": meta.head_id,
        "kind": meta.kind,
        "labels": list(meta.labels),
        "modalities": sorted(meta.dims.pooled),
        "encoders": meta.encoders,
        "metrics": meta.metrics,
        "created": meta.created,
    }


@serve.deployment(name="FusionHead", max_ongoing_requests=32)
class FusionHead:
    def __init__(self, store: str, max_heads: int = 4) -> None:
        self.store = Path(store)

        async def load(model_id: str):
            return await asyncio.to_thread(self._load, model_id)

        # Wired at init so the LRU size comes from the config (Serve detects it on the instance).
        self.get_head = serve.multiplexed(max_num_models_per_replica=max_heads)(load)

    def _load(self, model_id: str):
        tenant, head = split_model_id(model_id)
        loaded = fusion.load_checkpoint(self.store / tenant, head)
        observe_model_load("fusion_head")
        log.info("loaded fusion head %s (%s)", model_id, loaded[1].kind)
        return loaded

    async def describe(self) -> dict:
        """The card of the head this request is routed for (``multiplexed_model_id``)."""
        _, meta = await self.get_head(serve.get_multiplexed_model_id())
        return card(meta)

    async def predict(self, rows: list[dict], encoders: dict[str, dict]) -> list[dict]:
        """Fuse each row's features (``{modality: ModalityFeatures}``); refuses a head trained on
        other encoders or dimensions than the ones running."""
        head, meta = await self.get_head(serve.get_multiplexed_model_id())
        fusion.check_compatible(meta, encoders)
        return await asyncio.to_thread(fusion.predict, head, meta, rows)

    def list_heads(self, tenant: str) -> list[dict]:
        return [card(meta) for meta in fusion.list_heads(self.store / tenant)]

    def ping(self) -> str:
        return "ok"
