"""The OpenAPI spec of routes that parse their own bodies (JSON or multipart with one schema).

FastAPI cannot see those bodies, so each route declares ``openapi_extra=body(Model)`` (through
``routing.post``) and ``install`` adds the models (collected from the app's routes when the app is
built) to ``components.schemas``: the JSON form as the model's own schema, the multipart form with
media fields as binary file parts. The error responses come from the one status table in ``errors``.
``python -m deployments.gateway.openapi`` writes the spec to the committed ``openapi.json``.
"""

from __future__ import annotations

import copy

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from deployments.gateway.errors import documented_errors

REF = "#/components/schemas/{model}"


def body(schema: type[BaseModel], *, multipart: bool = True, raw: str | None = None) -> dict:
    """``raw``: the media field an ``application/octet-stream`` body carries (other fields in the query)."""
    content = {"application/json": {"schema": {"$ref": REF.format(model=schema.__name__)}}}
    if multipart:
        content["multipart/form-data"] = {"schema": {"$ref": REF.format(model=f"{schema.__name__}Form")}}
    request_body: dict = {"required": True, "content": content}
    if raw:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
        request_body["description"] = (
            f"application/octet-stream: the body is the bytes of '{raw}' (one item); the other fields "
            "go as query parameters (repeat a list field's name)"
        )
    error = {"content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}}
    errors = {code: {**error, "description": text} for code, text in documented_errors().items()}
    return {"requestBody": request_body, "responses": errors}


def _as_file(prop: dict) -> dict:
    if prop.get("contentEncoding") == "base64":
        return {"type": "string", "format": "binary", "description": prop.get("description", "")}
    if prop.get("type") == "array" and prop.get("items", {}).get("contentEncoding") == "base64":
        return {**prop, "items": _as_file(prop["items"])}
    return prop


def _form_schema(schema: dict) -> dict:
    form = copy.deepcopy(schema)
    form["properties"] = {name: _as_file(prop) for name, prop in form.get("properties", {}).items()}
    form["title"] = f"{schema.get('title', '')}Form"
    return form


def install(app: FastAPI, schemas: list[type[BaseModel]]) -> None:
    """Serve a spec that also describes ``schemas`` (the bodies routes parse themselves)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in schemas:
                js = model.model_json_schema(ref_template=REF)
                components.update(js.pop("$defs", {}))
                components[model.__name__] = js
                components[f"{model.__name__}Form"] = _form_schema(js)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi
