"""Priority across the whole backlog, and aging so that no level starves."""

from __future__ import annotations

from datetime import datetime

import httpx

from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask, Priority
from services.core.settings import Settings
from tests.support.database import execute
from tests.support.services import running_api, running_worker, submit, wait_for
from tests.support.store import claim_one, create


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


async def test_a_task_past_the_aging_bound_is_claimed_before_fresher_high_ones(
    store: SqlTaskStore, settings: Settings
) -> None:
    """Aging, without waiting for it: a LOW task made to have waited 2 s goes before ten
    HIGH tasks that just arrived when the bound is 1 s, and after them when it is an hour."""
    low, _ = await create(store, NewTask(title="low", priority=Priority.LOW))
    for _ in range(10):
        await create(store, NewTask(title="high", priority=Priority.HIGH))
    await store.confirm_queued(list(await store.reserve_due(100)))
    await execute(
        settings.database_url,
        "UPDATE tasks SET available_at = now() - interval '2 seconds' WHERE id = $1",
        low.id,
    )
    fresh_first = await claim_one(store, aging=3600.0)
    aged_first = await claim_one(store, aging=1.0)
    assert fresh_first is not None and fresh_first.task.priority is Priority.HIGH
    assert aged_first is not None and aged_first.task.id == low.id
