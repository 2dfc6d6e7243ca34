"""The server's side of the HTTP contract as clients read it: the OpenAPI document the API
serves at /openapi.json, made without starting a server (creating the app connects
nothing)."""

from __future__ import annotations

import functools
import json
from typing import Any

from services.api.app import create_app
from tests.support.env import ADMIN_URL, make_settings


@functools.cache
def server_document() -> dict[str, Any]:
    """The document, as JSON gives it to a client."""
    app = create_app(make_settings(ADMIN_URL, "contract"))
    return json.loads(json.dumps(app.openapi()))  # type: ignore[no-any-return]


def schema(name: str) -> dict[str, Any]:
    """The document's schema `name` (Task, Status, ...)."""
    return server_document()["components"]["schemas"][name]  # type: ignore[no-any-return]
