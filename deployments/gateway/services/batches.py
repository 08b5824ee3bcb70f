"""The Batch API's service: a tenant's files and batches in the store (``deployments/batch/store``),
and the start of each batch's runner, a detached Ray actor that owns the run (``deployments/batch/runner``).

The gateway never runs a batch itself: it checks the caller's limits, writes the batch's first state,
launches the runner and from then on only reads what the runner writes. A batch whose runner is gone
(a whole-cluster restart, say) is relaunched when it is next read, and resumes where its blocks end.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from api.batch import RUNNING, BatchList, BatchObject, CreateBatchRequest, FileDeleted, FileObject
from config.batch import BatchArgs, BatchLimits
from config.tenants import Tenant
from deployments.batch import runner
from deployments.batch.store import Store, new_id
from deployments.batch.work import MODALITY, POOL, Plan
from deployments.gateway.errors import statuses_by_class
from deployments.gateway.parsing import off_loop
from deployments.gateway.services.encoders import Encoders
from deployments.gateway.services.vision_language import switched_off
from models.errors import InvalidInput, NotFound, PayloadTooLarge, Throttled, Unavailable
from models.media import MediaLimits

FORM_OVERHEAD = 64 * 1024  # multipart framing around the file part, allowed above the file limit
LIST_LIMIT = 100


class Batches:
    def __init__(
        self,
        config: BatchArgs | None,
        encoders: Encoders,
        media: MediaLimits,
        models: dict[str, dict[str, Any]],
    ) -> None:
        self.config, self.encoders, self.media, self.models = config, encoders, media, models
        self.store = Store(config.store) if config is not None else None

    def _store(self) -> Store:
        if self.store is None:
            raise Unavailable("the Batch API is not enabled here (batch.enabled)")
        return self.store

    def limits(self, tenant: Tenant) -> BatchLimits:
        assert self.config is not None
        return tenant.batch or self.config.limits

    # ---- files ----------------------------------------------------------------------------------
    def check_length(self, tenant: Tenant, content_length: int | None) -> None:
        """Refuse a body that announces more than the tenant's file limit before reading any of it."""
        self._store()
        limit = self.limits(tenant).max_file_bytes
        if content_length is not None and content_length > limit + FORM_OVERHEAD:
            raise PayloadTooLarge(
                f"the file is larger than this tenant's limit of {limit} bytes", param="file"
            )

    async def add_file(
        self, tenant: Tenant, filename: str, purpose: str, chunks: Iterable[bytes]
    ) -> FileObject:
        if purpose != "batch":
            raise InvalidInput(f"purpose '{purpose}' is not accepted here; use 'batch'", param="purpose")
        limits = self.limits(tenant)
        return await off_loop(
            self._store().add_file,
            tenant.id,
            filename or "input.jsonl",
            chunks,
            max_bytes=limits.max_file_bytes,
            max_lines=limits.max_lines,
        )

    async def file(self, tenant: Tenant, file_id: str) -> FileObject:
        return await off_loop(self._store().file, tenant.id, file_id)

    async def files(self, tenant: Tenant) -> list[FileObject]:
        return await off_loop(self._store().files, tenant.id)

    async def content(self, tenant: Tenant, file_id: str) -> Iterator[bytes]:
        store = self._store()
        await off_loop(store.file_path, tenant.id, file_id)  # 404 before the answer starts
        return store.content(tenant.id, file_id)

    async def delete_file(self, tenant: Tenant, file_id: str) -> FileDeleted:
        await off_loop(self._store().delete_file, tenant.id, file_id)
        return FileDeleted(id=file_id)

    # ---- batches --------------------------------------------------------------------------------
    async def create(self, tenant: Tenant, request: CreateBatchRequest) -> BatchObject:
        store = self._store()
        tenant.require_modality(MODALITY[request.endpoint])
        if POOL[request.endpoint] == "vision_language" and not self.models.get("vision_language"):
            # every line would fail (online: 503); the batch cannot run here at all, so it is the
            # caller's request that is wrong (400, not a 503 that invites retrying), with the same words
            raise InvalidInput(switched_off().message, param="endpoint")
        source = await self.file(tenant, request.input_file_id)  # 404 for a missing or foreign file
        if source.purpose != "batch":
            raise InvalidInput(f"file {source.id} is a batch's result, not an input", param="input_file_id")
        running = sum(1 for b in await off_loop(store.batches, tenant.id) if b.status in RUNNING)
        limit = self.limits(tenant).max_running
        if running >= limit:
            raise Throttled(
                f"this tenant already has {running} batches running (limit {limit})", retry_after=60
            )
        now = int(time.time())
        batch = BatchObject(
            id=new_id("batch_"),
            endpoint=request.endpoint,
            input_file_id=source.id,
            status="validating",
            created_at=now,
            expires_at=now + 24 * 3600,
            metadata=request.metadata,
        )
        plan = await self._plan(tenant, batch)
        await off_loop(store.save_batch, tenant.id, batch)
        await off_loop(runner.launch, plan)
        return batch

    async def _plan(self, tenant: Tenant, batch: BatchObject) -> Plan:
        assert self.config is not None
        infos = await self.encoders.infos()
        embedders = await self.encoders.embedders()
        return Plan(
            tenant=tenant.id,
            batch_id=batch.id,
            endpoint=batch.endpoint,
            store=self.config.store,
            block_size=self.config.block_size,
            pool=self.config.pool(POOL[batch.endpoint]).model_dump(),
            vision_spec=self.models["vision"],
            text_spec=self.models["text"],
            limits=self.media,
            embedders={m: kind for m, kind in embedders.items() if kind in tenant.modalities},
            infos={
                k: {"model": i.model, "space": i.space, "task_model": i.task_model} for k, i in infos.items()
            },
            statuses=statuses_by_class(),
            speech_spec=self.models.get("speech", {}),
            vl_specs=self.models.get("vision_language", []),
        )

    async def get(self, tenant: Tenant, batch_id: str) -> BatchObject:
        store = self._store()
        batch = await off_loop(store.batch, tenant.id, batch_id)
        if batch.status not in RUNNING:
            return batch
        if not await off_loop(runner.is_running, batch_id):
            await off_loop(runner.launch, await self._plan(tenant, batch))  # resumes from its blocks
        if await off_loop(store.cancel_asked, tenant.id, batch_id):
            batch = batch.model_copy(update={"status": "cancelling"})
        return batch

    async def list(self, tenant: Tenant, after: str | None, limit: int) -> BatchList:
        found = await off_loop(self._store().batches, tenant.id)
        if after is not None:
            ids = [b.id for b in found]
            if after not in ids:
                raise NotFound(f"No such Batch object: {after}", param="after")
            found = found[ids.index(after) + 1 :]
        page = found[: max(1, min(limit, LIST_LIMIT))]
        return BatchList(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=len(found) > len(page),
        )

    async def cancel(self, tenant: Tenant, batch_id: str) -> BatchObject:
        store = self._store()
        batch = await off_loop(store.batch, tenant.id, batch_id)
        if batch.status in RUNNING:
            await off_loop(store.ask_cancel, tenant.id, batch_id)
            return await self.get(tenant, batch_id)
        return batch
