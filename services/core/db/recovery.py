"""Taking tasks back from holders that are gone: expired leases, and workers known dead."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from services.core.db.base import StoreBase
from services.core.domain import (
    Recovered,
    Status,
)


class Recovery(StoreBase):
    """Hand back what lost holders held, each task in one guarded step."""

    async def recover_expired(self, limit: int) -> list[Recovered]:
        """Hand back up to `limit` tasks whose lease ran out, each in one guarded step.

        A task goes back to the queue, or becomes CANCELLED when a cancel was requested,
        or FAILED when its attempts are used up. The attempt it was on stays counted, so a
        late result from the lost holder is refused.
        """
        return await self._recover(_RECOVER_EXPIRED, {"limit": limit})

    async def recover_worker(
        self, worker_id: str, claimed_before: datetime | None = None
    ) -> list[Recovered]:
        """Hand back every task `worker_id` holds, lease or not: that worker is known gone.

        With `claimed_before`, only tasks claimed before then: a restarted container keeps
        its pod's name, and what it claimed since is its own.
        """
        return await self._recover(_RECOVER_WORKER, {"worker": worker_id, "before": claimed_before})

    async def _recover(self, statement: sa.TextClause, params: dict[str, Any]) -> list[Recovered]:
        rows = await self._write(statement, params)
        recovered = [
            Recovered(row.id, Status(row.status), row.attempts, row.trace_context) for row in rows
        ]
        self.events.moved_each(task.status for task in recovered)
        return recovered


# The attempt budget is spent (counted since the task was last run again).
_SPENT = "attempts - attempts_before_rerun >= max_attempts"

# The lost attempt is kept in the task's history, in the same statement.
_RECOVER = """
    WITH ended AS (
        UPDATE tasks SET
            status = CASE
                WHEN cancel_requested THEN 'CANCELLED'
                WHEN {spent} THEN 'FAILED'
                ELSE 'PENDING' END,
            error = CASE
                WHEN cancel_requested THEN error
                ELSE 'attempt ' || attempts || ' was lost: ' || :why END,
            finished_at = CASE WHEN cancel_requested OR {spent} THEN now() END,
            available_at = now(), queued_at = NULL, lease_expires_at = NULL, updated_at = now()
        WHERE id = ANY(ARRAY({candidates})) AND status = 'IN_PROGRESS' AND {guard}
        RETURNING id, status, attempts, trace_context, worker_id, started_at
    ), kept AS (
        INSERT INTO task_attempts
            (task_id, attempt, worker_id, started_at, finished_at, outcome, error)
        SELECT id, attempts, worker_id, started_at, now(), 'lost', 'lost: ' || :why FROM ended
    )
    SELECT id, status, attempts, trace_context FROM ended
"""

_RECOVER_EXPIRED = sa.text(
    _RECOVER.format(
        spent=_SPENT,
        candidates="""
        SELECT id FROM tasks WHERE status = 'IN_PROGRESS' AND lease_expires_at < now()
        ORDER BY lease_expires_at LIMIT :limit FOR UPDATE SKIP LOCKED""",
        guard="lease_expires_at < now()",
    )
).bindparams(why="its worker stopped renewing the lease")

_WORKER_GONE = (
    "worker_id = :worker AND (CAST(:before AS timestamptz) IS NULL OR started_at < :before)"
)

_RECOVER_WORKER = sa.text(
    _RECOVER.format(
        spent=_SPENT,
        candidates=f"""
        SELECT id FROM tasks WHERE status = 'IN_PROGRESS' AND {_WORKER_GONE}
        FOR UPDATE SKIP LOCKED""",
        guard=_WORKER_GONE,
    )
).bindparams(why="its worker is gone")
