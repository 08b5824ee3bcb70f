"""The Batch API in OpenAI's shapes: ``/v1/files`` (a tenant's JSONL inputs and the batches' results)
and ``/v1/batches`` (bulk work on the same models, run by Ray Data outside the request path)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from api import batch as b
from deployments.gateway import deps, routing
from deployments.gateway.parsing import parse_body
from deployments.gateway.services.batches import Batches
from models.errors import InvalidInput

router = APIRouter()
CHUNK = 256 * 1024


def _chunks(upload: UploadFile):
    upload.file.seek(0)
    while chunk := upload.file.read(CHUNK):
        yield chunk


async def _upload(request: Request, batches: Batches, tenant) -> b.FileObject:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        body = await parse_body(request, b.FileUpload)
        return await batches.add_file(tenant, "input.jsonl", body.purpose, [body.file])
    form = await request.form(max_files=1, max_fields=4)
    upload, purpose = form.get("file"), form.get("purpose")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("'file' must be a file part holding the JSONL", param="file")
    if not isinstance(purpose, str):
        raise InvalidInput("'purpose' is required: 'batch'", param="purpose")
    try:
        return await batches.add_file(tenant, upload.filename or "", purpose, _chunks(upload))
    finally:
        await upload.close()


@routing.post(
    router, "/v1/files", body=b.FileUpload, modality="none", status_code=200, response_model=b.FileObject
)
async def create_file(request: Request, batches: deps.BatchesDep, tenant: deps.CurrentTenant):
    """Upload a JSONL of requests (``purpose=batch``); its size and line count are checked against the
    tenant's limits while it is copied into the store."""
    length = request.headers.get("content-length")
    batches.check_length(tenant, int(length) if length and length.isdigit() else None)
    return await _upload(request, batches, tenant)


@routing.get(router, "/v1/files", response_model=b.FileList)
async def list_files(batches: deps.BatchesDep, tenant: deps.CurrentTenant):
    return b.FileList(data=await batches.files(tenant))


@routing.get(router, "/v1/files/{file_id}", response_model=b.FileObject)
async def retrieve_file(file_id: str, batches: deps.BatchesDep, tenant: deps.CurrentTenant):
    return await batches.file(tenant, file_id)


@routing.get(router, "/v1/files/{file_id}/content", response_class=StreamingResponse)
async def file_content(file_id: str, batches: deps.BatchesDep, tenant: deps.CurrentTenant):
    """The file's bytes (JSONL)."""
    return StreamingResponse(await batches.content(tenant, file_id), media_type="application/jsonl")


@routing.delete(router, "/v1/files/{file_id}", response_model=b.FileDeleted)
async def delete_file(file_id: str, batches: deps.BatchesDep, tenant: deps.CurrentTenant):
    return await batches.delete_file(tenant, file_id)


@routing.post(
    router,
    "/v1/batches",
    body=b.CreateBatchRequest,
    modality="none",
    multipart=False,
    response_model=b.BatchObject,
)
async def create_batch(
    batches: deps.BatchesDep, tenant: deps.CurrentTenant, body=routing.body_of(b.CreateBatchRequest)
):
    """Run every request of an uploaded file against ``endpoint`` (one of ``/v1/embeddings``,
    ``/v1/embeddings/image``, ``/v1/classify``, ``/v1/audio/transcriptions``, ``/v1/captions``,
    ``/v1/vqa``; the last two answer 503 as online where vision-language is off); poll
    ``GET /v1/batches/{id}``."""
    return await batches.create(tenant, body)


@routing.get(router, "/v1/batches", response_model=b.BatchList)
async def list_batches(
    batches: deps.BatchesDep,
    tenant: deps.CurrentTenant,
    after: str | None = Query(None, max_length=64),
    limit: int = Query(20, ge=1, le=100),
):
    return await batches.list(tenant, after, limit)


@routing.get(router, "/v1/batches/{batch_id}", response_model=b.BatchObject)
async def retrieve_batch(batch_id: str, batches: deps.BatchesDep, tenant: deps.CurrentTenant):
    return await batches.get(tenant, batch_id)


@routing.action(router, "/v1/batches/{batch_id}/cancel", response_model=b.BatchObject)
async def cancel_batch(batch_id: str, batches: deps.BatchesDep, tenant: deps.CurrentTenant):
    return await batches.cancel(tenant, batch_id)
