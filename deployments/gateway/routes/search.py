"""Visual search routes: per-tenant indexes of image embeddings, queried by text, image or speech.

Item ids are the sha256 of the image bytes, so re-adding content is a no-op and is never embedded twice.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api import schemas as s
from deployments.gateway import deps, routing
from deployments.gateway.services.search import index_name
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
async def create_index(
    search: deps.SearchDep, tenant: deps.CurrentTenant, body=routing.body_of(s.CreateIndexRequest)
):
    return await search.create(tenant, body.name)


@routing.get(router, "/v1/indexes", response_model=s.IndexList)
async def list_indexes(search: deps.SearchDep, tenant: deps.CurrentTenant) -> s.IndexList:
    return await search.list(tenant)


@routing.get(router, "/v1/indexes/{name}", response_model=s.IndexInfo)
async def describe_index(name: str, search: deps.SearchDep, tenant: deps.CurrentTenant) -> s.IndexInfo:
    return await search.describe(tenant, name)


@routing.delete(router, "/v1/indexes/{name}")
async def drop_index(name: str, search: deps.SearchDep, tenant: deps.CurrentTenant) -> JSONResponse:
    await search.drop(tenant, name)  # 404 when it does not exist
    return JSONResponse({"name": name, "deleted": True})


@routing.post(
    router,
    "/v1/indexes/{name}/items",
    body=s.AddItemsRequest,
    modality="image",
    multipart=False,
    response_model=s.AddItemsResponse,
)
async def add_items(
    name: str, search: deps.SearchDep, tenant: deps.CurrentTenant, body=routing.body_of(s.AddItemsRequest)
):
    return await search.add_items(tenant, name, body.items)


@routing.post(
    router,
    "/v1/indexes/{name}/items/lookup",
    body=s.ItemIdsRequest,
    modality="none",
    multipart=False,
    response_model=s.LookupResponse,
)
async def lookup_items(
    name: str, search: deps.SearchDep, tenant: deps.CurrentTenant, body=routing.body_of(s.ItemIdsRequest)
):
    """Which of these content hashes the index holds (bulk indexing skips them)."""
    return s.LookupResponse(present=await search.lookup(tenant, name, body.ids))


@routing.post(
    router,
    "/v1/indexes/{name}/items/delete",
    body=s.ItemIdsRequest,
    modality="none",
    multipart=False,
    response_model=s.DeleteItemsResponse,
)
async def delete_items(
    name: str, search: deps.SearchDep, tenant: deps.CurrentTenant, body=routing.body_of(s.ItemIdsRequest)
):
    return s.DeleteItemsResponse(deleted=await search.delete_items(tenant, name, body.ids))


@routing.post(
    router, "/v1/indexes/{name}/query", body=s.QueryRequest, modality="any", response_model=s.QueryResponse
)
async def query_index(
    name: str, search: deps.SearchDep, tenant: deps.CurrentTenant, body=routing.body_of(s.QueryRequest)
):
    name = index_name(tenant, name)
    given = [k for k in QUERY_KINDS if getattr(body, k) is not None]
    if len(given) != 1:
        raise InvalidInput("give exactly one of 'text', 'image' or 'audio' as the query", param="query")
    vector, transcript = await search.query_vector(tenant, given[0], getattr(body, given[0]))
    return await search.query(tenant, name, given[0], vector, transcript, top_k=body.top_k, where=body.where)
