"""The pages a browser opens: the playground at ``/ui/`` and the API docs at ``/docs`` and ``/redoc``.

Every asset is served from this machine, so both work offline: the playground's HTML, CSS and
JavaScript modules live in ``deployments/gateway/ui/`` (package data), Swagger UI's and ReDoc's in the
``fastapi-offline`` package (Swagger UI 5, which renders OpenAPI 3.1). The pages and their assets need
no API key (``routing.OPEN_PAGES`` / ``OPEN_PREFIXES``); the API calls the playground makes send the key
the user typed. None of these routes is part of the OpenAPI spec.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).parent / "ui"
UI_PATH = "/ui"
DOCS_ASSETS = "/docs/static"

# The playground runs only its own scripts and styles; images and audio may also be data: or blob:
# URLs (previews, thumbnails, recordings); it talks to this origin only and may not be framed.
UI_HEADERS = {
    "Content-Security-Policy": "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "media-src 'self' data: blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    "Cache-Control": "no-cache",
}
# Swagger UI's and ReDoc's pages start themselves with an inline script, so /docs cannot have the
# playground's policy; it still may not be framed or sniffed.
DOCS_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class _Files(StaticFiles):
    """Static files with fixed response headers."""

    def __init__(self, *, directory: Path, headers: dict[str, str], html: bool = False) -> None:
        super().__init__(directory=str(directory), html=html)
        self.headers = headers

    async def get_response(self, path: str, scope: Scope):
        response = await super().get_response(path, scope)
        response.headers.update(self.headers)
        return response


def docs_assets_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the playground and the offline docs on ``app`` (built with ``docs_url=None, redoc_url=None``)."""
    app.mount(UI_PATH, _Files(directory=UI_DIR, headers=UI_HEADERS, html=True), name="ui")
    app.mount(DOCS_ASSETS, _Files(directory=docs_assets_dir(), headers=DOCS_HEADERS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )
        return _with(page, DOCS_HEADERS)

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _with(get_swagger_ui_oauth2_redirect_html(), DOCS_HEADERS)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        return _with(page, DOCS_HEADERS)


def _with(response: HTMLResponse, headers: dict[str, str]) -> HTMLResponse:
    response.headers.update(headers)
    return response
