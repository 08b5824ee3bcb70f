"""Request bodies: JSON (media as base64) or multipart/form-data (media as file parts), validated
by the same pydantic schema either way. Parsing and validation (base64 decoding included) run in a
worker thread, so a large body never stalls the gateway's event loop.

Before the schema sees a body, the decoded structure is checked as a whole (``check_decoded``), so
no route, field or nesting level can miss it (400 ``invalid_request_error`` naming the field):

- every string (dict keys included) must be encodable as UTF-8. JSON's ``"\\ud800"`` escapes (and a
  multipart body with ``charset=utf-7`` or ``unicode_escape``) produce lone surrogates, which Python
  holds but cannot encode: one in ``language`` killed the AudioModel replica that quoted it in an
  error, and the retry killed the next one (issue 22);
- every JSON integer must fit in 64 bits. Longer literals would reach Python's 4300-digit limit
  (a ValueError, once a 500) or a vector store that takes int64 only; ``json.loads`` hands each
  literal to ``_json_int`` first, so one is never converted at all.
"""

from __future__ import annotations

import asyncio
import json
import re
import types
import typing
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from deployments import tracing
from models.errors import InvalidInput, UnsupportedMedia, safe_text

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
RAW_TYPE = "application/octet-stream"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


# Work on at most this many bytes runs on the event loop. A thread hop (submit, wake a worker, chain
# the future back) costs the gateway ~90 us of CPU; parsing and validating a 64 KiB JSON body costs
# ~320 us and orjson of 8k floats ~360 us, so a small body saves the hop and stalls the loop for
# under half a millisecond (``python -m benchmarks.inline_threshold``, 2 busy cores). sha256 reads
# ~7x faster than that (44 us per 64 KiB): ``HASH_SPEEDUP`` scales a hash's bytes to this budget.
INLINE_BYTES = 64 * 1024
HASH_SPEEDUP = 4  # (conservatively)


async def off_loop(fn: Callable[..., T], /, *args, **kwargs) -> T:
    """Run CPU work of the request path (parsing, hashing, serialising) in a worker thread."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def maybe_off_loop(size: int, fn: Callable[..., T], /, *args, **kwargs) -> T:
    """``fn`` on the event loop when it works on at most ``INLINE_BYTES`` (``size``), else ``off_loop``."""
    if size <= INLINE_BYTES:
        return fn(*args, **kwargs)
    return await off_loop(fn, *args, **kwargs)


async def parse_body(request: Request, schema: type[M], raw_field: str | None = None) -> M:
    """The body as ``schema``: JSON, a form, or (where the route names ``raw_field``) an octet-stream
    body that is that media field, with the other fields in the query."""
    with tracing.span("parse", schema=schema.__name__):
        return await _parsed(request, schema, raw_field)


async def _parsed(request: Request, schema: type[M], raw_field: str | None) -> M:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        raw = await request.body()
        return await maybe_off_loop(len(raw), _validate_json, raw, schema)
    if content_type in FORM_TYPES:
        data = await _form(await request.form(), schema)
        return await maybe_off_loop(_form_size(data), _validate_form, data, schema)
    if content_type == RAW_TYPE and raw_field:
        data = await _raw(request, schema, raw_field)
        return await maybe_off_loop(_form_size(data), _validate_form, data, schema)
    raise UnsupportedMedia(
        (
            f"content type '{content_type}' is not accepted"
            if content_type
            else "the request has no content type"
        )
        + "; send application/json"
        + (f", {RAW_TYPE} (the {raw_field!r} bytes)" if raw_field else "")
        + " or multipart/form-data",
        param="content-type",
    )


def check_raw_field(schema: type[BaseModel], field: str) -> None:
    """An octet-stream body of ``schema`` is ``field`` (one media item, or the one item of a list);
    the other fields are query parameters. Checked when the route is declared."""
    if field not in schema.model_fields:
        raise ValueError(f"{schema.__name__} has no field {field!r}")


async def _raw(request: Request, schema: type[BaseModel], field: str) -> dict:
    """An octet-stream body as form data: the body is ``field``, the query gives the other fields.
    The body is read through the same byte cap, rate and deadline as any other (``limits``)."""
    data = _query(request, schema)
    raw = await request.body()
    data[field] = [raw] if _is_list(schema, field) else raw
    return data


def _query(request: Request, schema: type[BaseModel]) -> dict:
    """The query parameters as fields of ``schema``, repeated ones as lists for list fields (as
    ``_form`` does for parts); unknown names are left for the schema to refuse."""
    params = request.query_params
    return {
        name: params.getlist(name) if _is_list(schema, name) else params.getlist(name)[-1]
        for name in dict.fromkeys(params.keys())
    }


class _OutOfRange:
    """What ``json.loads`` puts where an integer literal does not fit in 64 bits (reported with its
    path by ``check_decoded``)."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _json_int(literal: str) -> int | _OutOfRange:
    """``parse_int`` of ``json.loads``: the literal as an int, unless it is over 64 bits (never
    converted when longer than any int64, so no digit limit is reached)."""
    if len(literal) < 19:  # the fast path: fits in any case
        return int(literal)
    value = int(literal) if len(literal) <= 20 else None
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        return _OutOfRange(len(literal.lstrip("-")))
    return value


def _child(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_string(text: str, path: str, *, what: str = "") -> None:
    if not text.isascii() and _SURROGATE.search(text):  # isascii() is O(1): base64 media costs nothing
        raise InvalidInput(
            f"{what}'{safe_text(path) or 'body'}' holds text that cannot be encoded as UTF-8 (a lone "
            "surrogate such as \\ud800); send valid Unicode",
            param=path or None,
        )


def check_decoded(data: object) -> None:
    """Every string of a decoded body encodable, every integer within 64 bits (raises InvalidInput with
    the field's path, e.g. ``items.0.metadata.title``). Iterative: depth costs no recursion."""
    stack: list[tuple[object, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            _check_string(value, path)
        elif isinstance(value, _OutOfRange):
            raise InvalidInput(
                f"'{path or 'body'}' is an integer of {value.digits} digits; integers must fit in "
                f"64 bits ({INT64_MIN} to {INT64_MAX})",
                param=path or None,
            )
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_string(
                    key, path, what="a key of "
                )  # reported at its dict: the key has no name to give
                stack.append((item, _child(path, key)))
        elif isinstance(value, list):
            stack.extend((item, _child(path, n)) for n, item in enumerate(value))


def _validate_json(raw: bytes, schema: type[M]) -> M:
    try:
        data = json.loads(raw, parse_int=_json_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidInput("the JSON body is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput("the JSON body must be an object")
    check_decoded(data)
    try:
        return schema.model_validate(data)
    except RecursionError:
        raise InvalidInput("the JSON body is nested too deeply") from None


def _validate_form(data: dict, schema: type[M]) -> M:
    check_decoded(data)  # file parts are bytes (skipped); field parts are text in the part's charset
    return schema.model_validate(data)


def _form_size(data: dict) -> int:
    """About how many bytes validating a parsed form reads: its text fields' lengths (a file part is
    bytes already, which validation passes through without reading)."""
    items = (v for value in data.values() for v in (value if isinstance(value, list) else [value]))
    return sum(len(v) for v in items if isinstance(v, str))


def _is_list(schema: type[BaseModel], name: str) -> bool:
    """A list field, optional ones (``list[...] | None``) included."""
    field = schema.model_fields.get(name)
    if field is None:
        return False
    kinds = (
        typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
        else (field.annotation,)
    )
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
