from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.core.settings import Settings
from tests.support.services import running_api, running_worker


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API and one worker, running against the real servers."""
    async with running_api(settings) as client, running_worker(settings):
        yield client
