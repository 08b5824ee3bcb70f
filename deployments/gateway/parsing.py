"""Request bodies: JSON (media as base64) or multipart/form-data (media as file parts), validated
by the same pydantic schema either way. Parsing and validation (base64 decoding included) run in a
worker thread, so a large body never stalls the gateway's event loop."""
from __future__ import annotations

import asyncio
import json
import types
import typing
from typing import Callable, TypeVar

from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from models.errors import InvalidInput, UnsupportedMedia

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def off_loop(fn: Callable[..., T], /, *args, **kwargs) -> T:
    """Run CPU work of the request path (parsing, hashing, serialising) in a worker thread."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def parse_body(request: Request, schema: type[M]) -> M:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await off_loop(_validate_json, await request.body(), schema)
    if content_type in FORM_TYPES:
        return await off_loop(schema.model_validate, await _form(await request.form(), schema))
    raise UnsupportedMedia(
        (f"content type '{content_type}' is not accepted" if content_type else "the request has no content type")
        + "; send application/json or multipart/form-data",
        param="content-type",
    )


def _validate_json(raw: bytes, schema: type[M]) -> M:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidInput("the JSON body is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput("the JSON body must be an object")
    try:
        return schema.model_validate(data)
    except RecursionError:
        raise InvalidInput("the JSON body is nested too deeply") from None


def _is_list(schema: type[BaseModel], name: str) -> bool:
    """A list field, optional ones (``list[...] | None``) included."""
    field = schema.model_fields.get(name)
    if field is None:
        return False
    kinds = typing.get_args(field.annotation) if typing.get_origin(field.annotation) in (typing.Union, types.UnionType) \
        else (field.annotation,)
    return any(typing.get_origin(kind) is list for kind in kinds)


async def _value(item) -> object:
    return await item.read() if isinstance(item, UploadFile) else item


async def _form(form: FormData, schema: type[BaseModel]) -> dict:
    """Repeated parts become lists for list-typed fields; other fields take a single part. A list
    field's parts may be named ``field[]`` (as the openai client sends timestamp_granularities)."""
    data: dict[str, object] = {}
    for part in dict.fromkeys(form.keys()):
        name = part[:-2] if part.endswith("[]") and _is_list(schema, part[:-2]) else part
        items = [await _value(v) for v in form.getlist(part)]
        data[name] = items if _is_list(schema, name) else items[-1]
    return data
