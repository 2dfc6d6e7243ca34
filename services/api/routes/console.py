"""/ui: the web console, a page of plain JavaScript over the same API and the same keys.

The page holds no secret and sets no cookie: the key a person enters stays in the
browser's session storage and goes with each API call as a bearer token, so a request
forged by another site carries no key (and the API takes JSON bodies only). A strict
Content-Security-Policy allows scripts, styles and connections from this origin alone;
nothing is loaded from elsewhere, so it works in an air-gapped cluster.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter, HTTPException, Response

from services.api.auth import Reader
from services.api.deps import ServicesDep
from services.api.responses import errors, json_response
from services.api.schemas import TraceOut

FILES = Path(__file__).resolve().parent.parent / "console"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])


# The console's files, read once: the script, the style and the icon, by name.
_STATIC = {
    path.name: (path.read_bytes(), _TYPES[path.suffix])
    for path in (FILES / "static").iterdir()
    if path.suffix in _TYPES
}
_PAGE = (FILES / "index.html").read_bytes()


@router.get("/ui/static/{name}")
async def static_file(name: str) -> Response:
    """The console's script, style and icon."""
    if name not in _STATIC:
        raise HTTPException(404)
    body, media_type = _STATIC[name]
    return Response(body, media_type=media_type, headers=SECURITY_HEADERS)


@router.get("/ui")
@router.get("/ui/{page:path}")
async def page(page: str = "") -> Response:
    """Every console address is the same page: it reads the address (its filters too)."""
    return Response(_PAGE, media_type="text/html", headers=SECURITY_HEADERS)


@api.get("/{task_id}/trace", response_model=TraceOut, responses=errors(404, 422))
async def task_trace(task_id: uuid.UUID, services: ServicesDep, principal: Reader) -> Response:
    """The task's trace id, and its address in the tracing UI when CONVEYOR_TRACE_URL is
    set (a template with {trace_id})."""
    context = await services.store.trace_context(task_id, principal.tenant)
    parent = (context or {}).get("traceparent", "")
    parts = parent.split("-")
    trace_id = parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
    template = services.settings.trace_url
    url = template.replace("{trace_id}", trace_id) if template and trace_id else None
    return json_response(TraceOut(trace_id=trace_id, url=url))
