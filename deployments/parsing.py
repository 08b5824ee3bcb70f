"""Request bodies: JSON (media as base64) or multipart/form-data (media as file parts), validated
by the same pydantic schema either way."""
from __future__ import annotations

import json
import typing
from typing import TypeVar

from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from models.errors import InvalidInput, UnsupportedMedia

M = TypeVar("M", bound=BaseModel)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def parse_body(request: Request, schema: type[M]) -> M:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        data = await _json(request)
    elif content_type in FORM_TYPES:
        data = await _form(await request.form(), schema)
    else:
        raise UnsupportedMedia(
            (f"content type '{content_type}' is not accepted" if content_type else "the request has no content type")
            + "; send application/json or multipart/form-data",
            param="content-type",
        )
    return schema.model_validate(data)


async def _json(request: Request) -> dict:
    try:
        data = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("the JSON body must be an object")
    return data


def _is_list(schema: type[BaseModel], name: str) -> bool:
    field = schema.model_fields.get(name)
    return field is not None and typing.get_origin(field.annotation) is list


async def _value(item) -> object:
    return await item.read() if isinstance(item, UploadFile) else item


async def _form(form: FormData, schema: type[BaseModel]) -> dict:
    """Repeated parts become lists for list-typed fields; other fields take a single part."""
    data: dict[str, object] = {}
    for name in dict.fromkeys(form.keys()):
        items = [await _value(v) for v in form.getlist(name)]
        data[name] = items if _is_list(schema, name) else items[-1]
    return data
