"""The API's documentation, `/docs` (Swagger UI) and `/redoc`, with every asset served by the service itself: the
pages work on a network that reaches no other host (FastAPI's defaults load them from a CDN, and render nothing
without one). The assets are the ones the ``fastapi-offline`` package keeps, Swagger UI 5 (OpenAPI 3.1); the
service's own icon is ``api/static/favicon.svg``."""

import importlib.util
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"


def _assets() -> Path:
    """The package's static directory, found without importing it (its module would build an app class)."""
    spec = importlib.util.find_spec("fastapi_offline")
    assert spec is not None and spec.submodule_search_locations, "fastapi-offline is a dependency"
    return Path(next(iter(spec.submodule_search_locations))) / "static"


router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="ofedrepo API",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
    )


@router.get("/redoc", response_class=HTMLResponse)
def redoc() -> HTMLResponse:
    page = get_redoc_html(
        openapi_url="/openapi.json",
        title="ofedrepo API",
        redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )
    # ReDoc's sidebar shows its maker's logo from cdn.redoc.ly (hidden when it fails to load): images from
    # this service only, so that the page asks no other host for anything.
    page.headers["Content-Security-Policy"] = "img-src 'self' data:"
    return page


#: The service's icon, an SVG (browsers take one at /favicon.ico as well as from a <link>).
FAVICON = Path(__file__).resolve().parents[1] / "static" / "favicon.svg"


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    return FileResponse(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


def install(app: FastAPI) -> None:
    app.mount(ASSETS_URL, StaticFiles(directory=_assets()), name="docs-assets")
    app.include_router(router)
