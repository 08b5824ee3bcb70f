"""Visual search: the SearchIndex deployment, addressed in the tenant's namespace, and the queries
(text, image or speech) that land in an index's embedding space."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
from ray.serve.handle import DeploymentHandle

from api import schemas as s
from config.tenants import Tenant
from deployments.gateway.calls import call
from deployments.gateway.parsing import off_loop
from deployments.gateway.services.encoders import Encoders
from deployments.gateway.services.speech import Speech
from models.errors import Forbidden, InvalidInput, Unavailable

INDEX_NAME = s.CreateIndexRequest.model_fields["name"].metadata[0].pattern


def index_name(tenant: Tenant, name: str) -> str:
    """An index name from a path or task, checked against the tenant's allow-list (unknown and
    forbidden look alike)."""
    if not re.fullmatch(INDEX_NAME, name):
        raise InvalidInput(f"index names match {INDEX_NAME}", param="name")
    tenant.require("index", name)
    return name


class Search:
    """The SearchIndex deployment: indexes of image embeddings per tenant, and queries against them."""

    def __init__(
        self, handle: DeploymentHandle | None, encoders: Encoders, speech: Speech, allowed_root: str | None
    ) -> None:
        self.handle, self.encoders, self.speech, self.allowed_root = handle, encoders, speech, allowed_root

    def store(self) -> DeploymentHandle:
        if self.handle is None:
            raise Unavailable("search is not configured in this deployment (search.enabled: false)")
        return self.handle

    # ---- indexes ----------------------------------------------------------------------------
    async def create(self, tenant: Tenant, name: str) -> s.IndexInfo:
        """A new index for the image embedder now running (its model, space and dimension)."""
        image = await self.encoders.info("image")
        info = await call(
            self.store().create,
            tenant.id,
            index_name(tenant, name),
            encoder=image.model,
            space=image.space,
            dim=image.dim,
        )
        return s.IndexInfo(**info)

    async def list(self, tenant: Tenant) -> s.IndexList:
        infos = await call(self.store().list, tenant.id)
        return s.IndexList(data=[s.IndexInfo(**i) for i in infos if tenant.may_use("index", i["name"])])

    async def describe(self, tenant: Tenant, name: str) -> s.IndexInfo:
        return s.IndexInfo(**await call(self.store().describe, tenant.id, index_name(tenant, name)))

    async def drop(self, tenant: Tenant, name: str) -> None:
        """404 when it does not exist; not retried (a retried drop that did happen would answer 404)."""
        await call(self.store().drop, tenant.id, index_name(tenant, name), retry=False)

    # ---- items ------------------------------------------------------------------------------
    async def add_items(self, tenant: Tenant, name: str, items: list[s.IndexItem]) -> s.AddItemsResponse:
        """Items are keyed by the sha256 of their bytes: content already indexed (or repeated in the
        request) is neither embedded nor added again."""
        name = index_name(tenant, name)
        raws = await asyncio.gather(
            *(self.item_bytes(tenant, it, f"items[{i}]") for i, it in enumerate(items))
        )
        ids = await off_loop(lambda: [s.content_id(raw) for raw in raws])
        present = await call(self.store().has, tenant.id, name, ids)
        todo = [n for n, i in enumerate(ids) if i not in present and i not in ids[:n]]
        vectors = await self._embed(tenant, [raws[n] for n in todo], [f"items[{n}]" for n in todo])
        rows = [(ids[n], v, items[n].metadata) for n, v in zip(todo, vectors)]
        encoder = (await self.encoders.info("image")).model
        added, _ = await call(self.store().add, tenant.id, name, rows, encoder=encoder) if rows else (0, 0)
        return s.AddItemsResponse(ids=ids, added=added, already_present=len(ids) - added)

    async def _embed(self, tenant: Tenant, raws: list[bytes], names: list[str]) -> np.ndarray | list:
        """The image embeddings of the items to add (none to embed: nothing asked of the encoder)."""
        return await self.encoders.embed_many(tenant, "image", raws, "items", names=names) if raws else []

    async def lookup(self, tenant: Tenant, name: str, ids: list[str]) -> list[str]:
        """Which of ``ids`` the index holds, in the order asked."""
        present = await call(self.store().has, tenant.id, index_name(tenant, name), ids)
        return [i for i in ids if i in present]

    async def delete_items(self, tenant: Tenant, name: str, ids: list[str]) -> int:
        return await call(self.store().delete, tenant.id, index_name(tenant, name), ids)

    def read_path(self, tenant: Tenant, path: str, param: str) -> bytes:
        root = tenant.allowed_root or self.allowed_root
        if root is None:
            raise Forbidden("server-side paths are off (no allowed_root for this tenant)", param=param)
        if "\x00" in path:
            raise InvalidInput("a path may not contain NUL bytes", param=param)
        base = Path(root)
        target = (base / path).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            raise InvalidInput(f"'{path}' is not a file under the allowed root", param=param)
        return target.read_bytes()

    async def item_bytes(self, tenant: Tenant, item: s.IndexItem, param: str) -> bytes:
        if (item.image is None) == (item.path is None):
            raise InvalidInput("each item needs exactly one of 'image' or 'path'", param=param)
        if item.image is not None:
            return item.image
        return await off_loop(self.read_path, tenant, item.path, param)

    # ---- queries ----------------------------------------------------------------------------
    async def query_vector(self, tenant: Tenant, kind: str, value) -> tuple[np.ndarray, str | None]:
        """(the query's vector, the transcript of a spoken query)."""
        if kind == "image":
            return await self.encoders.embed_media(tenant, "image", value, "image"), None
        if kind == "text":
            return (await self.encoders.embed_texts(tenant, [value]))[0], None
        audio = await self.encoders.media.decode(tenant, "audio", value, "audio")
        return await self.speech.spoken_query(tenant, audio, param="audio")

    async def query(
        self,
        tenant: Tenant,
        name: str,
        kind: str,
        vector: np.ndarray,
        transcript: str | None,
        *,
        top_k: int,
        where: dict,
    ) -> s.QueryResponse:
        """The ``top_k`` nearest items to a query of ``kind`` (in the space that kind lands in)."""
        name, space = index_name(tenant, name), await self.encoders.query_space(kind)
        hits = await call(self.store().search, tenant.id, name, vector, space=space, top_k=top_k, where=where)
        return s.QueryResponse(index=name, query=kind, transcript=transcript, hits=[s.Hit(**h) for h in hits])
