"""Wire schemas of the Batch API, in OpenAI's shapes (``/v1/files``, ``/v1/batches``).

An input file is JSONL, one request a line: ``{"custom_id", "method": "POST", "url", "body"}``. Each
line's result is one line of the batch's output file (a 2xx) or its error file (anything else), keyed
by the same ``custom_id``: ``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from api.schemas import media_bytes

MEDIA_SCHEMA = {
    "type": "string",
    "contentEncoding": "base64",
    "description": "the JSONL file: a file part (multipart) or base64 (JSON)",
}

BatchEndpoint = Literal[
    "/v1/embeddings",
    "/v1/embeddings/image",
    "/v1/classify",
    "/v1/audio/transcriptions",
    "/v1/captions",
    "/v1/vqa",
]
BATCH_ENDPOINTS = get_args(BatchEndpoint)
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
FilePurpose = Literal["batch", "batch_output"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FileObject(_Out):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(_Out):
    object: Literal["list"] = "list"
    data: list[FileObject]


class FileDeleted(_Out):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class CreateBatchRequest(BaseModel):
    """``POST /v1/batches``. ``completion_window`` is OpenAI's only value, ``24h``."""

    model_config = ConfigDict(extra="forbid")
    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: BatchEndpoint
    completion_window: Literal["24h"] = "24h"
    metadata: dict[str, str] | None = Field(None, max_length=16)


class RequestCounts(_Out):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchErrorItem(_Out):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(_Out):
    object: Literal["list"] = "list"
    data: list[BatchErrorItem]


class BatchObject(_Out):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str = "24h"
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = RequestCounts()
    metadata: dict[str, str] | None = None


class BatchList(_Out):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class BatchRequestLine(BaseModel):
    """One line of an input file."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: str
    body: dict[str, Any]


class FileUpload(BaseModel):
    """``POST /v1/files``: the JSONL ``file`` (a multipart file part, as OpenAI's clients send it, or
    base64 in JSON) and its ``purpose``."""

    model_config = ConfigDict(extra="forbid")
    file: Annotated[bytes, BeforeValidator(media_bytes), WithJsonSchema(MEDIA_SCHEMA)]
    purpose: Literal["batch"]
