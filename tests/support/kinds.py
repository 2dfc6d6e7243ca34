"""A user kinds module, loaded through CONVEYOR_TASK_MODULES like any user's."""

from __future__ import annotations

from collections import Counter
from typing import Any

from services.core.kinds import kind

runs: Counter[str] = Counter()


@kind("count")
async def count(payload: dict[str, Any]) -> dict[str, int]:
    """Counts its runs per payload key, so tests can tell how often a handler ran."""
    runs[payload["key"]] += 1
    return {"runs": runs[payload["key"]]}
