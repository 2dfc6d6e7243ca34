"""Priority across the whole backlog, and aging so that no level starves."""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx

from services.core.settings import Settings
from tests.support.services import running_api, running_worker, submit, wait_for


async def _started(api: httpx.AsyncClient, task_id: str) -> datetime:
    task = await wait_for(api, task_id, timeout=30)
    return datetime.fromisoformat(task["started_at"])


async def test_one_slot_takes_all_high_then_medium_then_low(settings: Settings) -> None:
    settings = settings.model_copy(update={"worker_concurrency": 1})
    async with running_api(settings) as api:
        backlog = []
        for priority in ("LOW", "HIGH", "MEDIUM"):
            for _ in range(4):
                task = await submit(api, kind="noop", priority=priority)
                backlog.append((priority, task["id"]))
        for _, task_id in backlog:
            await wait_for(api, task_id, {"PENDING"})
        async with running_worker(settings):
            starts = [(await _started(api, task_id), priority) for priority, task_id in backlog]
    order = [priority for _, priority in sorted(starts)]
    assert order == ["HIGH"] * 4 + ["MEDIUM"] * 4 + ["LOW"] * 4


async def test_a_low_task_starts_within_the_aging_bound_under_a_stream_of_high(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"worker_concurrency": 1, "aging_seconds": 1.0})
    async with running_api(settings) as api, running_worker(settings):
        # HIGH work arrives faster than one slot drains it; LOW joins once HIGH is queued,
        # and the stream goes on for three aging bounds more.
        highs: list[str] = []
        low = None
        loop = asyncio.get_running_loop()
        stream_end = loop.time() + 4.0
        while loop.time() < stream_end:
            highs.append(
                (await submit(api, kind="sleep", priority="HIGH", payload={"seconds": 0.1}))["id"]
            )
            if low is None and len(highs) == 10:
                low = await submit(api, kind="noop", priority="LOW")
            await asyncio.sleep(0.04)
        assert low is not None
        status = (await api.get(f"/api/v1/tasks/{low['id']}")).json()["status"]
        waiting_highs = (
            await api.get(
                "/api/v1/tasks", params={"priority": "HIGH", "status": "PENDING", "limit": 100}
            )
        ).json()["items"]
        assert waiting_highs, "the HIGH stream must outpace the worker for this test to mean much"
        assert status == "COMPLETED", "LOW starved while HIGH work kept arriving"
        for high in highs:
            await api.delete(f"/api/v1/tasks/{high}")
