"""One state machine: the moves the SQL makes are exactly domain.TRANSITIONS.

Triggers record every status change of the run (tests/support/moves.py); the run ends in
an error if any test made a move outside the table. Here every move of the table is made
through the store, so that none of the table is dead either.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask
from services.core.settings import Settings
from tests.support.moves import ALLOWED, outside_the_table, recorded_moves
from tests.support.store import claim_one, complete_one, create

LEASE, AGING = 30.0, 3600.0


async def _queued(store: SqlTaskStore, count: int = 1) -> None:
    for _ in range(count):
        await create(store, NewTask(title="t", max_attempts=1))
    await store.confirm_queued(list(await store.reserve_due(100)))  # NEW -> PENDING


async def test_every_move_the_store_makes_is_in_the_table_and_every_move_is_made(
    store: SqlTaskStore, settings: Settings
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    await create(store, NewTask(title="later", scheduled_at=later))  # "" -> PENDING
    new, _ = await create(store, NewTask(title="new"))  # "" -> NEW
    await store.cancel(new.id)  # NEW -> CANCELLED
    named, _ = await create(store, NewTask(title="named"))
    await store.reserve_due(10)  # sent, not confirmed yet: still NEW
    held = await store.claim_named("w", LEASE, named.id)  # NEW -> IN_PROGRESS
    assert held is not None
    await store.hand_back(held.task.id, held.attempt)  # IN_PROGRESS -> PENDING
    await store.cancel(held.task.id)  # PENDING -> CANCELLED

    await _queued(store, 3)
    claims = [await claim_one(store) for _ in range(3)]  # PENDING -> IN_PROGRESS
    done, failed, stopped = (c for c in claims if c is not None)
    assert await complete_one(store, done, {"ok": True}) == "COMPLETED"
    assert await store.fail(failed.task.id, failed.attempt, "boom", None) == "FAILED"
    assert await store.mark_cancelled(stopped.task.id, stopped.attempt) == "CANCELLED"
    assert (await store.rerun(failed.task.id)).status == "PENDING"  # FAILED -> PENDING
    assert (await store.rerun(stopped.task.id)).status == "PENDING"  # CANCELLED -> PENDING

    moves = await recorded_moves(settings.database_url)
    assert not outside_the_table(moves)
    assert moves >= ALLOWED, f"moves of the table no store write makes: {ALLOWED - moves}"
