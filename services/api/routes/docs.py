"""/docs (Swagger UI) and /redoc: the OpenAPI document for people, with every file they
need served by the API itself (the package fastapi-offline ships Swagger UI's and
ReDoc's bundles), so they work where no CDN can be reached.

Their Content-Security-Policy allows this origin alone: Swagger UI's one inline script by
its hash, the inline styles both render with, their data: icons, and the blob: worker
ReDoc searches in.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from services.api.routes.console import SECURITY_HEADERS

OPENAPI_URL = "/openapi.json"
_ASSETS = files("fastapi_offline") / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
# The bundles, read once, by name: about 2.8 MB in all.
_FILES = {
    asset.name: (asset.read_bytes(), _TYPES[asset.name[asset.name.rfind(".") :]])
    for asset in _ASSETS.iterdir()
    if any(asset.name.endswith(suffix) for suffix in _TYPES)
}

router = APIRouter(include_in_schema=False)


def _policy(page: str) -> dict[str, str]:
    """The security headers of a page whose inline scripts are those of `page`."""
    inline = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline
    )
    policy = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; worker-src blob:; font-src 'self'; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {**SECURITY_HEADERS, "Content-Security-Policy": policy}


def _served(html: HTMLResponse) -> tuple[bytes, dict[str, str]]:
    """A page's body and the headers that allow what it needs."""
    return bytes(html.body), _policy(bytes(html.body).decode())


_SWAGGER = _served(
    get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title="Conveyor API",
        swagger_js_url="/docs/static/swagger-ui-bundle.js",
        swagger_css_url="/docs/static/swagger-ui.css",
        swagger_favicon_url="/docs/static/favicon.png",
    )
)
_REDOC = _served(
    get_redoc_html(
        openapi_url=OPENAPI_URL,
        title="Conveyor API",
        redoc_js_url="/docs/static/redoc.standalone.js",
        redoc_favicon_url="/docs/static/favicon.png",
        with_google_fonts=False,
    )
)


@router.get("/docs")
async def swagger_ui() -> Response:
    """The API's operations, to read and to try."""
    body, headers = _SWAGGER
    return Response(body, media_type="text/html", headers=headers)


@router.get("/redoc")
async def redoc() -> Response:
    """The API's reference, to read."""
    body, headers = _REDOC
    return Response(body, media_type="text/html", headers=headers)


@router.get("/docs/static/{name}")
async def asset(name: str) -> Response:
    """Swagger UI's and ReDoc's files."""
    if name not in _FILES:
        raise HTTPException(404)
    body, media_type = _FILES[name]
    headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"}
    return Response(body, media_type=media_type, headers=headers)
