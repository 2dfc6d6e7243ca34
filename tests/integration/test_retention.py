"""Retention: finished tasks past their status's retention go, with their attempts."""

from __future__ import annotations

import uuid

from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask, Status
from services.core.retention import delete_expired
from services.core.settings import Settings
from tests.support.database import execute, fetch
from tests.support.store import claim_one, complete_one, create


async def _finished(store: SqlTaskStore, settings: Settings, days_ago: float, how: str) -> str:
    """A task that ended COMPLETED, FAILED or CANCELLED `days_ago` days ago."""
    task, _ = await create(store, NewTask(title=f"{how} {days_ago}", kind="noop"))
    if how == "cancel":
        await store.cancel(task.id)
    else:
        await store.confirm_queued(list(await store.reserve_due(10)))
        claim = await claim_one(store)
        assert claim is not None and claim.task.id == task.id
        if how == "complete":
            await complete_one(store, claim, {"ok": True})
        else:
            await store.fail(task.id, claim.attempt, "broken", None)
    await execute(
        settings.database_url,
        "UPDATE tasks SET finished_at = now() - make_interval(secs => $2) WHERE id = $1",
        task.id,
        days_ago * 86_400,
    )
    return str(task.id)


async def test_retention_removes_what_is_due_and_nothing_else(
    store: SqlTaskStore, settings: Settings
) -> None:
    gone = [
        await _finished(store, settings, 8, "complete"),
        await _finished(store, settings, 31, "fail"),
        await _finished(store, settings, 31, "cancel"),
    ]
    kept = [
        await _finished(store, settings, 6, "complete"),
        await _finished(store, settings, 29, "fail"),
        await _finished(store, settings, 29, "cancel"),
    ]
    running, _ = await create(store, NewTask(title="queued", kind="noop"))
    retention = {Status.COMPLETED: 7.0, Status.FAILED: 30.0, Status.CANCELLED: 30.0}
    deleted = await delete_expired(store, retention, batch=2)  # more than one batch
    assert deleted == {Status.COMPLETED: 1, Status.FAILED: 1, Status.CANCELLED: 1}
    left = {str(row["id"]) for row in await fetch(settings.database_url, "SELECT id FROM tasks")}
    assert left == {*kept, str(running.id)} and not left & set(gone)
    attempts = await fetch(settings.database_url, "SELECT task_id FROM task_attempts")
    assert {str(row["task_id"]) for row in attempts} <= left  # the attempts went with them
    assert await delete_expired(store, retention, batch=2) == {}  # a repeat is harmless


async def test_a_retention_of_part_of_a_day_keeps_what_is_younger(
    store: SqlTaskStore, settings: Settings
) -> None:
    young = await _finished(store, settings, 0.25, "complete")  # 6 hours
    old = await _finished(store, settings, 0.75, "complete")  # 18 hours
    assert await delete_expired(store, {Status.COMPLETED: 0.5}, batch=10) == {Status.COMPLETED: 1}
    left = {str(row["id"]) for row in await fetch(settings.database_url, "SELECT id FROM tasks")}
    assert left == {young} and old not in left


async def test_a_status_kept_for_ever_is_never_deleted(
    store: SqlTaskStore, settings: Settings
) -> None:
    old = await _finished(store, settings, 3650, "complete")
    kept_for_ever = settings.model_copy(update={"retention_completed_days": 0.0})
    assert Status.COMPLETED not in kept_for_ever.retention_days()
    assert await delete_expired(store, kept_for_ever.retention_days(), batch=10) == {}
    assert (await store.get(uuid.UUID(old))).status is Status.COMPLETED
