"""The playground and the docs without Ray: served from local files without an API key (the API still
needs one), with the playground's security headers, out of the OpenAPI spec; and the thumbnails that
index items carry."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image

from api import schemas as s
from clients.indexing import thumbnail
from config.settings import GatewaySettings
from deployments.gateway import routing
from deployments.gateway.app import create_app
from models import search
from models.errors import InvalidInput, Unauthorized
from tests.assets import photo


def _locked_app():
    """The gateway app behind a tenants file that knows no key: every API call is a 401."""

    def authenticate(headers, address):
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")

    admission = SimpleNamespace(authenticate=authenticate)
    return create_app(SimpleNamespace(settings=GatewaySettings(), admission=admission))


@pytest.fixture
async def http():
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_locked_app()), base_url="http://t"
    ) as client:
        yield client


async def test_the_playground_and_its_assets_need_no_key_but_the_api_does(http):
    page = await http.get("/ui/")
    assert page.status_code == 200 and 'src="js/main.js"' in page.text
    for asset in ("/ui/playground.css", "/ui/js/main.js", "/ui/js/api.js", "/ui/js/compose.js"):
        assert (await http.get(asset)).status_code == 200, asset
    assert (await http.get("/ui", follow_redirects=False)).status_code in (307, 308)
    assert (await http.get("/v1/models")).status_code == 401
    assert (await http.get("/ui/../v1/models")).status_code == 401  # no way out of the open prefix


async def test_the_playground_runs_only_its_own_scripts(http):
    headers = (await http.get("/ui/js/main.js")).headers
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["default-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-type"].startswith(("text/javascript", "application/javascript"))


async def test_docs_load_swagger_ui_from_this_server(http):
    page = await http.get("/docs")
    assert page.status_code == 200
    assert "/docs/static/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
    bundle = await http.get("/docs/static/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 500_000
    assert (await http.get("/docs/static/swagger-ui.css")).status_code == 200
    redoc = await http.get("/redoc")
    assert "/docs/static/redoc.standalone.js" in redoc.text and "fonts.googleapis" not in redoc.text
    assert (await http.get("/openapi.json")).status_code == 200


def test_pages_stay_out_of_the_spec():
    paths = create_app().openapi()["paths"]
    assert not [p for p in paths if p.startswith(("/ui", "/docs", "/redoc"))]


@pytest.mark.parametrize(
    "path, open_",
    [
        ("/ui/", True),
        ("/ui/js/main.js", True),
        ("/docs/static/x.css", True),
        ("/healthz", True),
        ("/v1/models", False),
        ("/uix", False),
        ("/ui/../v1/models", False),
        ("/docs/static/../../v1/stats", False),
    ],
)
def test_open_paths(path, open_):
    assert routing.RouteTable.of(create_app().routes).is_open(path) is open_


def _size(url: str) -> tuple[int, int]:
    assert url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size


def test_thumbnails_fit_128_pixels_and_the_servers_limit():
    for name, fmt in (("chelsea", "JPEG"), ("astronaut", "PNG"), ("coffee", "WEBP")):
        url = thumbnail(photo(name, fmt))
        assert max(_size(url)) == 128, name
        assert len(url) <= s.MAX_THUMBNAIL_CHARS == search.MAX_THUMBNAIL_CHARS
        assert search.check_metadata({"thumbnail": url, "file": name})["thumbnail"] == url
    assert _size(thumbnail(photo("chelsea"), size=64)) == (64, 43)  # aspect ratio kept


def test_a_noisy_picture_still_fits_by_lowering_quality():
    rng = Image.frombytes("RGB", (512, 512), bytes(range(256)) * 3072)
    noisy = Image.effect_noise((512, 512), 120).convert("RGB")
    for image in (rng, noisy):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        url = thumbnail(buf.getvalue())
        assert url is not None and len(url) <= s.MAX_THUMBNAIL_CHARS


def test_no_thumbnail_for_what_is_not_an_image():
    assert thumbnail(b"not an image at all") is None
    assert thumbnail(photo("chelsea")[:200]) is None  # truncated


def test_the_server_takes_only_small_image_data_urls_as_thumbnails():
    for bad in (
        "https://example.org/cat.jpg",
        "javascript:alert(1)",
        "data:text/html;base64,PGI+",
        "data:image/jpeg;base64," + "A" * s.MAX_THUMBNAIL_CHARS,
        42,
    ):
        with pytest.raises(InvalidInput, match="thumbnail"):
            search.check_metadata({"thumbnail": bad})
    with pytest.raises(InvalidInput, match="1024"):
        search.check_metadata(
            {"caption": "data:image/jpeg;base64," + "A" * 2000}
        )  # other keys keep their limit
