"""The relay's outbox: which tasks are owed a broker message, and what became of it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from services.core.db.base import StoreBase, in_id_order
from services.core.domain import Outgoing


class Outbox(StoreBase):
    """Reserve due tasks, record the broker's confirms, and find messages that were lost."""

    async def reserve_due(self, limit: int) -> Outgoing:
        """Take up to `limit` due tasks that need a broker message, oldest first.

        Marks them as having a message (queued_at), so that no other relay sends one too,
        and answers their queues and trace contexts. The caller publishes, then confirm_queued(), or
        release() when the broker would not confirm. A relay that dies in between leaves
        them to resend_lost(): nothing waits on a lock meanwhile.
        """
        async with self._begin() as connection:
            rows = await connection.execute(_RESERVE, {"limit": limit, "cap": self._cap})
            return {row.id: (row.queue, row.trace_context) for row in rows}

    async def confirm_queued(self, ids: Sequence[uuid.UUID]) -> int:
        """The broker confirmed their messages: NEW becomes PENDING. Answers how many did."""
        if not ids:
            return 0
        return len(await self._write(_CONFIRM, {"ids": list(ids)}))

    async def release(self, ids: Sequence[uuid.UUID]) -> None:
        """Their messages were not confirmed: the relay owes them one again."""
        await self._write(_RELEASE, {"ids": list(ids)})

    async def unqueue_stale(
        self, older_than: float, limit: int, *, empty_queues: Sequence[str] = ()
    ) -> int:
        """Owe a new message to tasks whose message is not coming, after `older_than` s.

        Always for NEW tasks reserved that long ago and never confirmed (their relay died
        between reserving and publishing). Also for PENDING tasks queued that long ago in
        `empty_queues`, whose quorum queues hold no message: the broker has none for them
        any more (a purge, a node lost with its data, a delivery limit). Answers how many.
        """
        params = {"older": older_than, "limit": limit, "empty": list(empty_queues)}
        async with self._begin() as connection:
            result = await connection.execute(_UNQUEUE_STALE, params)
        return int(result.rowcount)

    async def next_due(self) -> datetime | None:
        """When the next task that needs a broker message becomes due, if any."""
        async with self._begin() as connection:
            return (await connection.execute(_NEXT_DUE, {"cap": self._cap})).scalar()


_UNQUEUED = "queued_at IS NULL AND status IN ('NEW', 'PENDING')"

# Owed a message: every NEW task (to become PENDING). A PENDING task too, but under a cap
# only so many of a tenant's that its running tasks and its queued ones stay within the
# cap: a tenant at its cap gets no messages that could only be turned away.
_RESERVE = sa.text(f"""
    WITH owed AS (
        SELECT id FROM tasks
        WHERE {_UNQUEUED} AND available_at <= now() AND (status = 'NEW' OR :cap = 0)
        ORDER BY available_at LIMIT :limit
    ), room AS (
        SELECT id FROM (
            SELECT id, tenant, row_number() OVER (PARTITION BY tenant ORDER BY available_at) AS n
            FROM tasks
            WHERE :cap > 0 AND status = 'PENDING' AND queued_at IS NULL AND available_at <= now()
        ) AS waiting
        WHERE n <= :cap - (SELECT count(*) FROM tasks AS held
                           WHERE held.tenant = waiting.tenant
                             AND (held.status = 'IN_PROGRESS' OR (held.status = 'PENDING'
                                  AND held.queued_at IS NOT NULL)))
        LIMIT :limit
    )
    UPDATE tasks SET queued_at = now()
    WHERE id = ANY(ARRAY(
        SELECT id FROM tasks
        WHERE id IN (SELECT id FROM owed UNION ALL SELECT id FROM room) AND {_UNQUEUED}
        ORDER BY available_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED))
      AND {_UNQUEUED}
    RETURNING id, queue, trace_context
""")

_CONFIRM = sa.text(f"""
    UPDATE tasks SET status = 'PENDING', updated_at = now()
    WHERE {in_id_order(":ids")} AND status = 'NEW'
    RETURNING id
""")

_RELEASE = sa.text(f"""
    UPDATE tasks SET queued_at = NULL
    WHERE {in_id_order(":ids")} AND status IN ('NEW', 'PENDING')
    RETURNING id
""")

_STALE = """
    queued_at < now() - make_interval(secs => :older)
    AND (status = 'NEW' OR (status = 'PENDING' AND queue = ANY(CAST(:empty AS text[]))))
"""

_UNQUEUE_STALE = sa.text(f"""
    UPDATE tasks SET queued_at = NULL
    WHERE id = ANY(ARRAY(
        SELECT id FROM tasks WHERE {_STALE}
        ORDER BY queued_at LIMIT :limit FOR UPDATE SKIP LOCKED))
      AND {_STALE}
""")

# Under a cap, a PENDING task that is due already waits for its tenant's room, which the
# relay looks for each interval: it is no reason to wake sooner.
_NEXT_DUE = sa.text(f"""
    SELECT min(available_at) FROM tasks
    WHERE {_UNQUEUED} AND (status = 'NEW' OR :cap = 0 OR available_at > now())
""")
