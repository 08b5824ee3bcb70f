"""Visual search routes: per-tenant indexes of image embeddings, queried by text, image or speech.

A mixin of ``Gateway``: the routes register on the shared app and run as Gateway methods. Item ids
are the sha256 of the image bytes, so re-adding content is a no-op and is never embedded twice.
"""
from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from clients import schemas as s
from deployments import tenancy
from deployments.http_app import app
from deployments.openapi import body
from deployments.parsing import parse_body
from models.errors import Forbidden, InvalidInput, Unavailable

NAME_PATTERN = s.CreateIndexRequest.model_fields["name"].metadata[0].pattern


def index_name(name: str) -> str:
    """A path's index name, checked against the tenant's allow-list (unknown and forbidden look alike)."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise InvalidInput(f"index names match {NAME_PATTERN}", param="name")
    tenancy.current().require("index", name)
    return name


class SearchRoutes:
    """Needs from the Gateway: ``search_index``, ``settings``, ``infos``, ``use``, ``_embed_raw``, ``_audio``."""

    def _store(self):
        if self.search_index is None:
            raise Unavailable("search is not configured in this deployment (search.enabled: false)")
        return self.search_index

    # ---- indexes ------------------------------------------------------------------------
    @app.post("/v1/indexes", openapi_extra=body(s.CreateIndexRequest, multipart=False), status_code=201,
              response_model=s.IndexInfo)
    async def create_index(self, request: Request) -> s.IndexInfo:
        body_ = await parse_body(request, s.CreateIndexRequest)
        vision = (await self.infos())["vision"]
        info = await self._store().create.remote(tenancy.current().id, index_name(body_.name), encoder=vision["embedder"],
                                                 space=vision["space"], dim=vision["dim"])
        return s.IndexInfo(**info)

    @app.get("/v1/indexes", response_model=s.IndexList)
    async def list_indexes(self) -> s.IndexList:
        tenant = tenancy.current()
        infos = await self._store().list.remote(tenant.id)
        return s.IndexList(data=[s.IndexInfo(**i) for i in infos if tenant.may_use("index", i["name"])])

    @app.get("/v1/indexes/{name}", response_model=s.IndexInfo)
    async def describe_index(self, name: str) -> s.IndexInfo:
        return s.IndexInfo(**await self._store().describe.remote(tenancy.current().id, index_name(name)))

    @app.delete("/v1/indexes/{name}")
    async def drop_index(self, name: str) -> JSONResponse:
        await self._store().drop.remote(tenancy.current().id, index_name(name))  # 404 when it does not exist
        return JSONResponse({"name": name, "deleted": True})

    # ---- items --------------------------------------------------------------------------
    def _read_path(self, path: str, param: str) -> bytes:
        root = self.settings.allowed_root
        if root is None:
            raise Forbidden("server-side paths are off (gateway.settings.allowed_root is not set)", param=param)
        base = Path(root).resolve()
        target = (base / path).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            raise InvalidInput(f"'{path}' is not a file under the allowed root", param=param)
        return target.read_bytes()

    async def _item_bytes(self, item: s.IndexItem, param: str) -> bytes:
        if (item.image is None) == (item.path is None):
            raise InvalidInput("each item needs exactly one of 'image' or 'path'", param=param)
        return item.image if item.image is not None else await asyncio.to_thread(self._read_path, item.path, param)

    @app.post("/v1/indexes/{name}/items", openapi_extra=body(s.AddItemsRequest, multipart=False),
              response_model=s.AddItemsResponse)
    async def add_items(self, name: str, request: Request) -> s.AddItemsResponse:
        tenant, name = tenancy.current().id, index_name(name)
        body_ = await parse_body(request, s.AddItemsRequest)
        raws = await asyncio.gather(*(self._item_bytes(it, f"items[{i}]") for i, it in enumerate(body_.items)))
        ids = [hashlib.sha256(raw).hexdigest() for raw in raws]
        present = await self._store().has.remote(tenant, name, ids)
        todo = [n for n, i in enumerate(ids) if i not in present and i not in ids[:n]]
        vectors = await asyncio.gather(*(self._embed_raw("image", raws[n], f"items[{n}]") for n in todo))
        rows = [(ids[n], v, body_.items[n].metadata) for n, v in zip(todo, vectors)]
        encoder = (await self.infos())["vision"]["embedder"]
        added, _ = await self._store().add.remote(tenant, name, rows, encoder=encoder) if rows else (0, 0)
        return s.AddItemsResponse(ids=ids, added=added, already_present=len(ids) - added)

    @app.post("/v1/indexes/{name}/items/lookup", response_model=s.LookupResponse,
              openapi_extra=body(s.ItemIdsRequest, multipart=False))
    async def lookup_items(self, name: str, request: Request) -> s.LookupResponse:
        """Which of these content hashes the index holds (bulk indexing skips them)."""
        body_ = await parse_body(request, s.ItemIdsRequest)
        present = await self._store().has.remote(tenancy.current().id, index_name(name), body_.ids)
        return s.LookupResponse(present=[i for i in body_.ids if i in present])

    @app.post("/v1/indexes/{name}/items/delete", openapi_extra=body(s.ItemIdsRequest, multipart=False),
              response_model=s.DeleteItemsResponse)
    async def delete_items(self, name: str, request: Request) -> s.DeleteItemsResponse:
        body_ = await parse_body(request, s.ItemIdsRequest)
        return s.DeleteItemsResponse(deleted=await self._store().delete.remote(tenancy.current().id, index_name(name),
                                                                               body_.ids))

    # ---- queries ------------------------------------------------------------------------
    @app.post("/v1/indexes/{name}/query", openapi_extra=body(s.QueryRequest), response_model=s.QueryResponse)
    async def query_index(self, name: str, request: Request) -> s.QueryResponse:
        name = index_name(name)
        body_ = await parse_body(request, s.QueryRequest)
        given = [k for k in ("text", "image", "audio") if getattr(body_, k) is not None]
        if len(given) != 1:
            raise InvalidInput("give exactly one of 'text', 'image' or 'audio' as the query", param="query")
        vector, space, transcript = await self._query_vector(given[0], getattr(body_, given[0]))
        hits = await self.search_vector(name, vector, space=space, top_k=body_.top_k, where=body_.where)
        return s.QueryResponse(index=name, query=given[0], transcript=transcript, hits=hits)

    async def _query_vector(self, kind: str, value) -> tuple[np.ndarray, str, str | None]:
        """(vector, its embedding space, the transcript of a spoken query)."""
        space = await self.query_space(kind)
        if kind == "image":
            return await self._embed_raw("image", value, "image"), space, None
        if kind == "text":
            return (await self.use("text").embed.remote([value]))[0], space, None
        heard = await self.use("audio").transcribe.remote(await self._audio(value, "audio"),
                                                          {"task": "transcribe", "language": None})
        return await self.embed_transcript(heard["text"], param="audio"), space, heard["text"]

    async def query_space(self, kind: str) -> str:
        """The space a query lands in: the image embedder's for images, the text encoder's for
        text and for speech (searched through its transcript)."""
        infos = await self.infos()
        return infos["vision"]["space"] if kind == "image" else infos["text"]["space"]

    async def embed_transcript(self, text: str, *, param: str) -> np.ndarray:
        if not text.strip():
            raise InvalidInput("no speech was recognised in the audio query", param=param)
        return (await self.use("text").embed.remote([text]))[0]

    async def search_vector(self, name: str, vector: np.ndarray, *, space: str, top_k: int,
                            where: dict) -> list[s.Hit]:
        hits = await self._store().search.remote(tenancy.current().id, name, vector, space=space, top_k=top_k,
                                                 where=where)
        return [s.Hit(**h) for h in hits]
