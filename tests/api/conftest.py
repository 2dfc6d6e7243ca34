from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.core.settings import Settings
from tests.support.services import running_api


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real API on a free port, with no worker: tasks stay queued."""
    async with running_api(settings) as client:
        yield client


async def count_tasks(api: httpx.AsyncClient) -> int:
    response = await api.get("/api/v1/tasks", params={"limit": 100})
    return len(response.json()["items"])
