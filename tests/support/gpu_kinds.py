"""A user kinds module whose kind names its own queue ("gpu")."""

from __future__ import annotations

from typing import Any

from services.core.kinds import kind


@kind("thumbnail", queue="gpu")
async def thumbnail(payload: dict[str, Any]) -> dict[str, str]:
    """Pretends to render on a GPU node."""
    return {"rendered": str(payload.get("image", ""))}
