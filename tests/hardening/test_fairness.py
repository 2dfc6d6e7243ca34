"""Worker capacity shared across tenants: a free slot goes to the tenant running the fewest
tasks, an optional cap bounds any one tenant, and no task holds a slot without a limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from services.core.db.engine import create_engine
from services.core.db.store import SqlTaskStore
from services.core.domain import Claim, NewTask, Priority, Status, Task
from services.core.settings import Settings
from tests.support.database import connect
from tests.support.services import running_api, running_worker, submit, wait_for
from tests.support.store import complete_one, create

LEASE, AGING = 30.0, 3600.0


async def _queued(store: SqlTaskStore, tenant: str, count: int = 1, **fields: object) -> None:
    for _ in range(count):
        new = NewTask(title=tenant, **fields)  # type: ignore[arg-type]
        await create(store, new, tenant=tenant)
    await store.confirm_queued(list(await store.reserve_due(1000)))


async def _claim(store: SqlTaskStore, limit: int) -> list[Claim]:
    return await store.claim_many("w", LEASE, AGING, limit)


@pytest.fixture
async def capped(settings: Settings) -> AsyncIterator[SqlTaskStore]:
    """A store whose tenants run at most 3 tasks at a time (TENANT_MAX_RUNNING=3)."""
    engine = create_engine(settings)
    yield SqlTaskStore(engine, tenant_cap=3)
    await engine.dispose()


async def test_a_free_slot_goes_to_the_tenant_running_fewest_whatever_the_priority(
    store: SqlTaskStore,
) -> None:
    await _queued(store, "bob", 20, priority=Priority.HIGH)
    assert len(await _claim(store, 3)) == 3  # bob runs 3
    await _queued(store, "alice", 2, priority=Priority.LOW)
    # alice runs none: her LOW task comes before bob's HIGH ones, then shares level out.
    taken = [c.task.title for c in await _claim(store, 4)]
    assert taken.count("alice") == 2, taken
    assert taken.count("bob") == 2, taken


async def test_one_claim_spreads_its_slots_across_tenants(store: SqlTaskStore) -> None:
    for tenant in ("a", "b", "c"):
        await _queued(store, tenant, 5, priority=Priority.MEDIUM)
    taken = [c.task.title for c in await _claim(store, 6)]
    assert sorted(taken) == ["a", "a", "b", "b", "c", "c"]


async def test_priority_still_orders_the_tasks_of_one_tenant(store: SqlTaskStore) -> None:
    for priority in (Priority.LOW, Priority.HIGH, Priority.MEDIUM):
        await _queued(store, "alice", priority=priority)
    order = [(await _claim(store, 1))[0].task.priority for _ in range(3)]
    assert order == [Priority.HIGH, Priority.MEDIUM, Priority.LOW]


async def test_the_cap_stops_a_tenant_at_its_running_tasks(capped: SqlTaskStore) -> None:
    await _queued(capped, "bob", 10)
    assert len(await _claim(capped, 10)) == 3
    assert await _claim(capped, 10) == []  # bob has ready work, but runs his cap
    await _queued(capped, "alice", 5)
    taken = [c.task.title for c in await _claim(capped, 10)]
    assert taken == ["alice"] * 3


async def test_a_named_claim_keeps_the_cap_and_the_relay_resends_only_into_room(
    settings: Settings,
) -> None:
    engine = create_engine(settings)
    store = SqlTaskStore(engine, tenant_cap=1)
    try:
        ids = [(await create(store, NewTask(title="bob"), tenant="bob"))[0].id for _ in range(3)]
        await store.confirm_queued(list(await store.reserve_due(10)))  # NEW: always sent
        (running,) = await store.claim_many("w", LEASE, AGING, 3)
        waiting = [i for i in ids if i != running.task.id]
        # Bob runs his cap: the task a ticket names is not taken; it leaves the queue instead.
        assert await store.claim_named("w", LEASE, waiting[0]) is None
        assert await store.unqueue_one(waiting[0])
        assert await store.unqueue_one(None)  # another ticket: no task of bob stays queued
        assert not await store.unqueue_one(None)
        assert await store.reserve_due(10) == {}  # no room: no message only to be refused
        await complete_one(store, running, None)
        assert await store.claim_named("w", LEASE, waiting[0]) is None  # its ticket was used
        assert len(await store.reserve_due(10)) == 1  # room for one: one message
    finally:
        await engine.dispose()


async def test_another_tenants_noop_starts_within_2_s_behind_a_full_backlog(
    settings: Settings, store: SqlTaskStore
) -> None:
    """Tenant B's 100 one-second HIGH tasks fill 2 workers x 4 slots; A's noop still starts
    as soon as a slot frees (the bound has a second of margin; priority alone gave 18 s)."""
    async with running_api(settings), running_worker(settings), running_worker(settings):
        for _ in range(100):
            await create(
                store,
                NewTask(
                    title="b's", kind="sleep", priority=Priority.HIGH, payload={"seconds": 1.0}
                ),
                tenant="b",
            )
        await _until_running(store, 8)
        task, _ = await create(
            store, NewTask(title="a's", kind="noop", priority=Priority.LOW), tenant="a"
        )
        done = await _until_done(store, task.id, "a")
        waiting = await _ready(store)
    assert done.started_at is not None
    waited = (done.started_at - task.created_at).total_seconds()
    assert waiting > 50, "B's backlog must still be waiting for this to mean much"
    assert waited <= 2.0, f"A's noop waited {waited:.1f} s behind B's backlog"


async def _ready(store: SqlTaskStore) -> int:
    depth = (await store.gauges()).depth
    return sum(n for (_, state), n in depth.items() if state == "ready")


async def _until_running(store: SqlTaskStore, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while await store.count_in_progress() < count:
        assert time.monotonic() < deadline, "the workers never filled their slots"
        await asyncio.sleep(0.05)


async def _until_done(store: SqlTaskStore, task_id: uuid.UUID, tenant: str) -> Task:
    deadline = time.monotonic() + 30
    while (task := await store.get(task_id, tenant)).status is not Status.COMPLETED:
        assert time.monotonic() < deadline, f"A's task still {task.status}"
        await asyncio.sleep(0.05)
    return task


async def test_the_running_cap_holds_across_workers_and_every_capped_task_still_runs(
    settings: Settings, store: SqlTaskStore
) -> None:
    """Two workers with 8 free slots, tenant B capped at 2: B never runs more than 2 at once,
    and B's tasks whose tickets came while B was at the cap are sent again and run."""
    # The lost-message safety net is set beyond the deadline: every message must count.
    settings = settings.model_copy(update={"tenant_max_running": 2, "lost_message_seconds": 300})
    database = await connect(settings.database_url)
    try:
        async with running_api(settings), running_worker(settings), running_worker(settings):
            for _ in range(12):
                await create(
                    store, NewTask(title="b", kind="sleep", payload={"seconds": 0.3}), tenant="b"
                )
            for _ in range(4):
                await create(store, NewTask(title="a", kind="noop"), tenant="a")
            most, deadline = 0, time.monotonic() + 30
            while await database.fetchval("SELECT count(*) FROM tasks WHERE status <> 'COMPLETED'"):
                assert time.monotonic() < deadline, await database.fetch(
                    "SELECT tenant, status, queued_at FROM tasks WHERE status <> 'COMPLETED'"
                )
                most = max(
                    most,
                    await database.fetchval(
                        "SELECT count(*) FROM tasks WHERE tenant = 'b' AND status = 'IN_PROGRESS'"
                    ),
                )
                await asyncio.sleep(0.01)
    finally:
        await database.close()
    assert most == 2


async def test_a_kind_without_a_limit_is_stopped_at_the_default_time_limit(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"default_timeout_seconds": 0.3})
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="sleep", payload={"seconds": 30}, max_attempts=1)
        done = await wait_for(api, task["id"], timeout=15)
    assert done["status"] == "FAILED"
    assert done["error"] == "timed out after 0.3 s", done["error"]


async def test_a_demo_kind_refuses_to_sleep_longer_than_its_cap(settings: Settings) -> None:
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="sleep", payload={"seconds": 700})
        done = await wait_for(api, task["id"], timeout=15)
    assert done["status"] == "FAILED"
    assert done["attempts"] == 1, "a bad argument is not worth a retry"
    assert "payload.seconds" in done["error"], done["error"]
