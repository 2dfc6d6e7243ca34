"""The store's guarded writes: terminal means terminal, and stale attempts are fenced off."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from services.core.db.engine import connect, create_engine
from services.core.db.store import SqlTaskStore
from services.core.domain import Claim, NewTask, Priority, Status
from services.core.settings import Settings
from tests.support.database import execute, expire_lease
from tests.support.store import claim_one, complete_one, create


async def _queued(store: SqlTaskStore, **fields: object) -> uuid.UUID:
    task, _ = await create(store, NewTask(title="t", **fields))  # type: ignore[arg-type]
    await store.confirm_queued(list(await store.reserve_due(100)))
    return task.id


async def _claim(store: SqlTaskStore, worker: str = "w") -> Claim:
    claim = await claim_one(store, worker)
    assert claim is not None
    return claim


async def test_a_completed_task_never_changes_again(store: SqlTaskStore) -> None:
    await _queued(store)
    claim = await _claim(store)
    assert await complete_one(store, claim, {"ok": 1}) is Status.COMPLETED
    assert await complete_one(store, claim, {"ok": 2}) is None
    assert await store.fail(claim.task.id, claim.attempt, "late", 0.0) is None
    assert await store.mark_cancelled(claim.task.id, claim.attempt) is None
    task = await store.get(claim.task.id)
    assert (task.status, task.result) == (Status.COMPLETED, {"ok": 1})


async def test_a_late_result_from_a_fenced_attempt_is_refused(
    store: SqlTaskStore, settings: Settings
) -> None:
    await _queued(store)
    first = await _claim(store, "first")
    # The lease runs out and the task is claimed again (as recovery will do).
    await execute(
        settings.database_url,
        "UPDATE tasks SET status = 'PENDING', queued_at = now(), lease_expires_at = NULL"
        " WHERE id = $1",
        first.task.id,
    )
    second = await _claim(store, "second")
    assert second.attempt == first.attempt + 1
    assert await complete_one(store, first, {"from": "first"}) is None
    assert await complete_one(store, second, {"from": "second"}) is not None
    assert (await store.get(first.task.id)).result == {"from": "second"}


async def test_claims_take_high_before_medium_before_low(store: SqlTaskStore) -> None:
    for priority in (Priority.LOW, Priority.HIGH, Priority.MEDIUM, Priority.HIGH):
        await _queued(store, priority=priority)
    order = [(await _claim(store)).task.priority for _ in range(4)]
    assert order == [Priority.HIGH, Priority.HIGH, Priority.MEDIUM, Priority.LOW]
    assert await claim_one(store) is None


async def test_a_task_sent_but_not_yet_confirmed_is_claimed_only_by_its_own_ticket(
    store: SqlTaskStore,
) -> None:
    task, _ = await create(store, NewTask(title="t"))
    assert await store.claim_named("w", 30, task.id) is None  # no message yet
    await store.reserve_due(10)  # sent, the broker's confirm not recorded yet
    assert await claim_one(store) is None
    assert await store.has_ready()  # its ticket is on its way: not to be dropped
    claim = await store.claim_named("w", 30, task.id)
    assert claim is not None and claim.task.id == task.id


async def test_a_retryable_failure_waits_out_its_backoff(store: SqlTaskStore) -> None:
    await _queued(store, max_attempts=2)
    claim = await _claim(store)
    assert await store.fail(claim.task.id, claim.attempt, "boom", 3600.0) is Status.PENDING
    assert await store.reserve_due(100) == {}  # not due for an hour
    assert await claim_one(store) is None
    assert await store.claim_named("w", 30, claim.task.id) is None
    task = await store.get(claim.task.id)
    assert (task.status, task.error, task.finished_at) == (Status.PENDING, "boom", None)


async def test_failing_the_last_attempt_fails_the_task(store: SqlTaskStore) -> None:
    await _queued(store, max_attempts=1)
    claim = await _claim(store)
    assert await store.fail(claim.task.id, claim.attempt, "boom", 0.0) is Status.FAILED
    assert (await store.get(claim.task.id)).finished_at is not None


async def test_a_requested_cancel_wins_over_a_retry(store: SqlTaskStore) -> None:
    await _queued(store)
    claim = await _claim(store)
    assert (await store.cancel(claim.task.id)).cancel_requested
    assert await store.fail(claim.task.id, claim.attempt, "boom", 0.0) is Status.CANCELLED


async def test_a_heartbeat_renews_only_the_attempts_still_held(store: SqlTaskStore) -> None:
    await _queued(store)
    await _queued(store)
    a, b = await _claim(store), await _claim(store)
    await store.cancel(b.task.id)
    beat = await store.heartbeat(
        "w", [(a.task.id, a.attempt), (b.task.id, b.attempt), (uuid.uuid4(), 1)], 30
    )
    assert beat.held == {a.task.id, b.task.id}
    assert beat.cancel_requested == {b.task.id}
    stale = await store.heartbeat("w", [(a.task.id, a.attempt + 1)], 30)
    assert stale.held == frozenset()
    other = await store.heartbeat("someone-else", [(a.task.id, a.attempt)], 30)
    assert other.held == frozenset()


async def test_hand_back_returns_the_task_with_its_attempt_uncounted(store: SqlTaskStore) -> None:
    await _queued(store)
    claim = await _claim(store)
    assert await store.hand_back(claim.task.id, claim.attempt) is Status.PENDING
    task = await store.get(claim.task.id)
    assert (task.status, task.attempts) == (Status.PENDING, 0)


async def test_recovery_requeues_cancels_or_fails_expired_leases(
    store: SqlTaskStore, settings: Settings
) -> None:
    from services.core.recovery import recover

    for max_attempts in (3, 3, 1, 3):
        await _queued(store, max_attempts=max_attempts)
    requeue, cancel, exhausted, healthy = [await _claim(store) for _ in range(4)]
    await store.cancel(cancel.task.id)
    for claim in (requeue, cancel, exhausted):
        await expire_lease(settings.database_url, claim.task.id)
    recovered = {r.id: r.status for r in await recover(store)}
    assert recovered == {
        requeue.task.id: Status.PENDING,
        cancel.task.id: Status.CANCELLED,
        exhausted.task.id: Status.FAILED,
    }
    assert (await store.get(healthy.task.id)).status is Status.IN_PROGRESS
    requeued = await store.get(requeue.task.id)
    assert requeued.attempts == 1 and "lost" in (requeued.error or "")
    # The lost holder's late result is refused; the requeued task waits for the relay.
    assert await complete_one(store, requeue, {"late": True}) is None
    assert list(await store.reserve_due(100)) == [requeue.task.id]
    assert await recover(store) == []


async def test_recovering_a_gone_worker_hands_back_only_its_tasks(store: SqlTaskStore) -> None:
    from services.core.recovery import recover_worker

    await _queued(store)
    await _queued(store)
    mine, theirs = await _claim(store, "pod-a"), await _claim(store, "pod-b")
    recovered = await recover_worker(store, "pod-a")
    assert [(r.id, r.status) for r in recovered] == [(mine.task.id, Status.PENDING)]
    assert (await store.get(theirs.task.id)).status is Status.IN_PROGRESS


# What the output boundary keeps from the store, handed to it anyway: PostgreSQL refuses a
# lone surrogate escape and a NUL escape in jsonb.
_REFUSED_NOTE = {"fraction": 0.5, "note": "\udc80"}
_REFUSED_RESULT = '{"x": "\\u0000"}'


async def test_a_heartbeat_whose_progress_postgresql_refuses_still_renews_every_lease(
    store: SqlTaskStore, settings: Settings
) -> None:
    await _queued(store)
    await _queued(store)
    a, b = await _claim(store), await _claim(store)
    await execute(settings.database_url, "UPDATE tasks SET lease_expires_at = now()")
    progress = {a.task.id: _REFUSED_NOTE, b.task.id: {"fraction": 0.2, "note": "fine"}}
    beat = await store.heartbeat(
        "w", [(a.task.id, a.attempt), (b.task.id, b.attempt)], 30, progress
    )
    assert beat.held == {a.task.id, b.task.id}
    assert (await store.get(a.task.id)).progress is None
    assert (await store.get(b.task.id)).progress == {"fraction": 0.2, "note": "fine"}
    assert (await store.gauges()).lease_expired == 0


async def test_a_result_postgresql_refuses_fails_its_own_task_and_no_other(
    store: SqlTaskStore,
) -> None:
    await _queued(store)
    await _queued(store)
    a, b = await _claim(store), await _claim(store)
    statuses = await store.complete_many(
        [(a.task.id, a.attempt, _REFUSED_RESULT), (b.task.id, b.attempt, '{"ok": true}')]
    )
    assert statuses == [Status.FAILED, Status.COMPLETED]
    failed = await store.get(a.task.id)
    assert failed.error is not None
    assert failed.error.startswith("the result could not be stored: ")
    assert (await store.get(b.task.id)).result == {"ok": True}


async def test_a_worker_s_engine_plans_the_claim_once_and_it_claims_as_before(
    settings: Settings,
) -> None:
    """The worker's connections keep one generic plan per statement, which serves any
    parameters, never JIT-compiled: the claims it makes take the same tasks in the same
    order."""
    one = settings.model_copy(update={"database_pool_size": 1})
    engine = create_engine(one, generic_plans=True)
    try:
        store = SqlTaskStore(engine)
        ids = {p: await _queued(store, priority=p) for p in (Priority.LOW, Priority.HIGH)}
        assert (await _claim(store)).task.id == ids[Priority.HIGH]
        assert (await _claim(store)).task.id == ids[Priority.LOW]
        async with connect(engine) as connection:
            plans = await connection.execute(
                sa.text(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement NOT LIKE '%pg_prepared_statements%'"
                )
            )
            # (By default the first five runs of each get a plan of their own.)
            runs = {row.statement: (row.generic_plans, row.custom_plans) for row in plans}
            # A generic plan's cost over a deep backlog would have it JIT-compiled each run.
            jit = (await connection.execute(sa.text("SHOW jit"))).scalar()
        assert jit == "off"
        assert [n for statement, n in runs.items() if "pick AS (" in statement] == [(2, 0)]
        assert all(custom == 0 for _, custom in runs.values()), runs
    finally:
        await engine.dispose()
