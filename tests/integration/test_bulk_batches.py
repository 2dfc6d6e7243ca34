"""Bulk cancel and re-run in batches: the work grows with the tasks matched, not with
their square, and a task another session holds is waited for at the end."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.core.db.engine import create_engine
from services.core.db.store import SqlTaskStore
from services.core.domain import TaskFilter
from services.core.settings import Settings
from tests.support.database import connect, execute, fetch

TASKS = 3000
BATCH = 30  # a hundred batches: a walk that starts over at each would read ~50 rows a task

# Queued tasks of a tenant, created a millisecond apart, their ids in no particular order.
_SEED = """
    INSERT INTO tasks (id, tenant, title, priority, status, kind, created_at, updated_at,
                       available_at)
    SELECT gen_random_uuid(), $1, 'bulk ' || n, 2, 'PENDING', 'noop',
           now() - interval '1 hour' + n * interval '1 ms', now() - interval '1 hour', now()
    FROM generate_series(1, $2) AS n
"""
# Cancelled an hour ago, as the seeded tasks' re-run needs them.
_CANCELLED = """
    UPDATE tasks SET status = 'CANCELLED', finished_at = updated_at WHERE status = 'PENDING'
"""
_LOCK_WAITERS = """
    SELECT count(*) AS n FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'
"""

_OTHER_SESSIONS = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
"""

Action = Callable[[SqlTaskStore, TaskFilter, int], Awaitable[int]]


async def _cancel(store: SqlTaskStore, where: TaskFilter, batch: int) -> int:
    cancelled, _ = await store.cancel_matching(where, batch)
    return cancelled


async def _rerun(store: SqlTaskStore, where: TaskFilter, batch: int) -> int:
    return await store.rerun_matching(where, batch)


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[SqlTaskStore]:
    """A store whose sessions all end with the block."""
    engine = create_engine(settings)
    try:
        yield SqlTaskStore(engine)
    finally:
        await engine.dispose()


async def _rows_read(database_url: str) -> int:
    """Rows of tasks that every statement of the database has read so far (fetched through
    an index or by a sequential scan), once every other session has ended: a session
    hands its counts to the statistics before it leaves pg_stat_activity."""
    connection = await connect(database_url)
    try:
        deadline = time.monotonic() + 30
        while await connection.fetchval(_OTHER_SESSIONS):
            assert time.monotonic() < deadline, "other sessions stayed open"
            await asyncio.sleep(0.02)
        read = await connection.fetchval(
            "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables"
            " WHERE relname = 'tasks'"
        )
        return int(read)
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("status", "action"), [("PENDING", _cancel), ("CANCELLED", _rerun)], ids=["cancel", "retry"]
)
async def test_a_bulk_action_reads_each_task_a_few_times_not_once_a_batch(
    settings: Settings, status: str, action: Action
) -> None:
    url = settings.database_url
    await execute(url, _SEED, "mine", TASKS)
    await execute(url, _SEED, "theirs", 500)
    if status == "CANCELLED":
        await execute(url, _CANCELLED)
    await execute(url, "VACUUM ANALYZE tasks")
    before = await _rows_read(url)
    async with _store(settings) as store:
        assert await action(store, TaskFilter(tenant="mine"), BATCH) == TASKS
    read = await _rows_read(url) - before
    # Read, locked and changed in its batch, perhaps read again by the last round: a few
    # reads a task. Batches that each walk from the start read ~TASKS / BATCH / 2 a task.
    assert read <= 5 * TASKS, f"{read} rows read to change {TASKS} in batches of {BATCH}"
    async with _store(settings) as store:
        assert await action(store, TaskFilter(tenant="mine"), BATCH) == 0
    left = await fetch(url, "SELECT count(*) AS n FROM tasks WHERE status = $1", status)
    assert left[0]["n"] == 500  # the other tenant's


async def test_a_task_another_session_holds_is_passed_over_then_waited_for(
    store: SqlTaskStore, settings: Settings
) -> None:
    url = settings.database_url
    await execute(url, _SEED, "mine", 200)
    held = await connect(url)
    try:
        transaction = held.transaction()
        await transaction.start()
        # As the relay does when it sends a task's message: the row changes, not its status.
        await held.execute("UPDATE tasks SET queued_at = now() WHERE title = 'bulk 100'")
        cancel = asyncio.create_task(store.cancel_matching(TaskFilter(tenant="mine"), 30))
        deadline = time.monotonic() + 30
        while not (await fetch(url, _LOCK_WAITERS))[0]["n"]:
            assert time.monotonic() < deadline, "the bulk cancel never waited for the task"
            await asyncio.sleep(0.02)
        pending = await fetch(url, "SELECT title FROM tasks WHERE status = 'PENDING'")
        assert [row["title"] for row in pending] == ["bulk 100"]
        await transaction.commit()
        assert await cancel == (200, 0)
    finally:
        await held.close()
    statuses = await fetch(url, "SELECT DISTINCT status FROM tasks")
    assert [row["status"] for row in statuses] == ["CANCELLED"]
