"""Retention: finished tasks are deleted once they are older than their status allows."""

from __future__ import annotations

import sqlalchemy as sa

from services.core.db.base import StoreBase
from services.core.domain import Status


class Retention(StoreBase):
    """Deletes finished tasks in small batches, one deleter at a time across processes."""

    async def delete_finished(self, status: Status, older_than_days: float, limit: int) -> int:
        """Delete up to `limit` tasks in `status` (a terminal one) that finished more than
        `older_than_days` ago, with their attempts; answer how many. 0 also when another
        process is deleting now (it has the turn)."""
        params = {"status": status.value, "seconds": older_than_days * 86_400, "limit": limit}
        async with self._begin(transaction=True) as connection:
            if not (await connection.execute(_TURN)).scalar():
                return 0
            return int((await connection.execute(_DELETE, params)).rowcount)


# One deleter at a time: a transaction's turn, let go at its commit.
_TURN = sa.text("SELECT pg_try_advisory_xact_lock(hashtext('conveyor.tasks.retention'))")

# The oldest first, read from ix_tasks_finished; rows another statement holds are left for
# the next batch. The age in seconds: make_interval's days are whole days, and a
# retention of half a day must not become none.
_DELETE = sa.text("""
    DELETE FROM tasks
    WHERE id = ANY(ARRAY(
        SELECT id FROM tasks
        WHERE status = :status AND finished_at < now() - make_interval(secs => :seconds)
        ORDER BY finished_at LIMIT :limit
        FOR UPDATE SKIP LOCKED))
      AND status = :status
""")
