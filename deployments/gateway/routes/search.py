"""Visual search routes: per-tenant indexes of image embeddings, queried by text, image or speech.

Item ids are the sha256 of the image bytes, so re-adding content is a no-op and is never embedded twice.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api import schemas as s
from deployments import tenancy
from deployments.gateway import deps, routing
from deployments.gateway.calls import call
from deployments.gateway.parsing import off_loop
from deployments.gateway.services import index_name
from models.errors import InvalidInput

router = APIRouter()
QUERY_KINDS = ("text", "image", "audio")


@routing.post(
    router,
    "/v1/indexes",
    body=s.CreateIndexRequest,
    modality="none",
    multipart=False,
    status_code=201,
    response_model=s.IndexInfo,
)
async def create_index(search: deps.Search, body=routing.body_of(s.CreateIndexRequest)):
    image = await search.encoders.info("image")
    info = await call(
        search.store().create,
        tenancy.current().id,
        index_name(body.name),
        encoder=image.model,
        space=image.space,
        dim=image.dim,
    )
    return s.IndexInfo(**info)


@routing.get(router, "/v1/indexes", response_model=s.IndexList)
async def list_indexes(search: deps.Search) -> s.IndexList:
    tenant = tenancy.current()
    infos = await call(search.store().list, tenant.id)
    return s.IndexList(data=[s.IndexInfo(**i) for i in infos if tenant.may_use("index", i["name"])])


@routing.get(router, "/v1/indexes/{name}", response_model=s.IndexInfo)
async def describe_index(name: str, search: deps.Search) -> s.IndexInfo:
    return s.IndexInfo(**await call(search.store().describe, tenancy.current().id, index_name(name)))


@routing.delete(router, "/v1/indexes/{name}")
async def drop_index(name: str, search: deps.Search) -> JSONResponse:
    await call(
        search.store().drop, tenancy.current().id, index_name(name), retry=False
    )  # 404 when it does not exist
    return JSONResponse({"name": name, "deleted": True})


@routing.post(
    router,
    "/v1/indexes/{name}/items",
    body=s.AddItemsRequest,
    modality="image",
    multipart=False,
    response_model=s.AddItemsResponse,
)
async def add_items(name: str, search: deps.Search, body=routing.body_of(s.AddItemsRequest)):
    tenant, name = tenancy.current().id, index_name(name)
    raws = await asyncio.gather(*(search.item_bytes(it, f"items[{i}]") for i, it in enumerate(body.items)))
    ids = await off_loop(lambda: [s.content_id(raw) for raw in raws])
    present = await call(search.store().has, tenant, name, ids)
    todo = [n for n, i in enumerate(ids) if i not in present and i not in ids[:n]]
    vectors = (
        await search.encoders.embed_many(
            "image", [raws[n] for n in todo], "items", names=[f"items[{n}]" for n in todo]
        )
        if todo
        else []
    )
    rows = [(ids[n], v, body.items[n].metadata) for n, v in zip(todo, vectors)]
    encoder = (await search.encoders.info("image")).model
    added, _ = await call(search.store().add, tenant, name, rows, encoder=encoder) if rows else (0, 0)
    return s.AddItemsResponse(ids=ids, added=added, already_present=len(ids) - added)


@routing.post(
    router,
    "/v1/indexes/{name}/items/lookup",
    body=s.ItemIdsRequest,
    modality="none",
    multipart=False,
    response_model=s.LookupResponse,
)
async def lookup_items(name: str, search: deps.Search, body=routing.body_of(s.ItemIdsRequest)):
    """Which of these content hashes the index holds (bulk indexing skips them)."""
    present = await call(search.store().has, tenancy.current().id, index_name(name), body.ids)
    return s.LookupResponse(present=[i for i in body.ids if i in present])


@routing.post(
    router,
    "/v1/indexes/{name}/items/delete",
    body=s.ItemIdsRequest,
    modality="none",
    multipart=False,
    response_model=s.DeleteItemsResponse,
)
async def delete_items(name: str, search: deps.Search, body=routing.body_of(s.ItemIdsRequest)):
    deleted = await call(search.store().delete, tenancy.current().id, index_name(name), body.ids)
    return s.DeleteItemsResponse(deleted=deleted)


@routing.post(
    router, "/v1/indexes/{name}/query", body=s.QueryRequest, modality="any", response_model=s.QueryResponse
)
async def query_index(name: str, search: deps.Search, body=routing.body_of(s.QueryRequest)):
    name = index_name(name)
    given = [k for k in QUERY_KINDS if getattr(body, k) is not None]
    if len(given) != 1:
        raise InvalidInput("give exactly one of 'text', 'image' or 'audio' as the query", param="query")
    vector, space, transcript = await search.query_vector(given[0], getattr(body, given[0]))
    hits = await search.search(name, vector, space=space, top_k=body.top_k, where=body.where)
    return s.QueryResponse(index=name, query=given[0], transcript=transcript, hits=hits)
