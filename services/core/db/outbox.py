"""The relay's outbox: which tasks are owed a broker message, and what became of it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa

from services.core.db.base import StoreBase, in_id_order
from services.core.domain import Outgoing, Status


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
        confirmed = len(await self._write(_CONFIRM, {"ids": list(ids)}))
        self.events.moved(Status.PENDING, confirmed)
        return confirmed

    async def release(self, ids: Sequence[uuid.UUID]) -> None:
        """Their messages were not confirmed: the relay owes them one again."""
        await self._write(_RELEASE, {"ids": list(ids)})

    async def clock(self) -> datetime:
        """PostgreSQL's clock, now (not the transaction's start)."""
        async with self._begin() as connection:
            moment: datetime = (await connection.execute(_CLOCK)).scalar_one()
            return moment

    async def unqueue_stale(
        self,
        older_than: float,
        limit: int,
        *,
        messages: Mapping[str, int] | None = None,
        read_at: datetime | None = None,
        settle: float | None = None,
    ) -> int:
        """Owe a new message to tasks whose message is not coming, after `older_than` s.

        Always for NEW tasks reserved that long ago and never confirmed (their relay died
        between reserving and publishing). Also for PENDING tasks of the queues counted in
        `messages` (the messages the broker holds for each queue, counted at `read_at` on
        this store's clock(), read before the broker's counts): a queue with more queued
        tasks than messages lost some (a purge, a node lost with its data, a delivery
        limit, a relay that died before publishing a PENDING task's). Messages are tickets
        for any task of their queue, so the difference is owed, oldest tasks first, counting
        only tasks whose message was in the broker at `read_at` if it ever came: confirmed
        from NEW by then, or reserved more than `settle` s (default `older_than`) before.
        Answers how many."""
        counted = dict(messages or {})
        params = {
            "older": older_than,
            "limit": limit,
            "queues": list(counted),
            "messages": list(counted.values()),
            "read_at": read_at,
            "settle": older_than if settle is None else settle,
        }
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

_CLOCK = sa.text("SELECT clock_timestamp()")

# Reserved so long ago that its message, if one was ever coming, is in the broker by now.
_OLD = "queued_at < now() - make_interval(secs => :older)"

# Queued tasks whose message, if one was ever coming, was in the broker when it was
# counted (:read_at): confirmed from NEW before then (only that confirm moves a queued
# task's updated_at past its queued_at), or reserved :settle s before, so that their
# publish had ended, confirmed or not. Tasks reserved since, whose publish may still be
# on its way, are not counted: their messages can only hide a loss, never invent one.
_SETTLED = """
    tasks.status = 'PENDING' AND tasks.queued_at IS NOT NULL
    AND (tasks.queued_at < coalesce(CAST(:read_at AS timestamptz), now())
                           - make_interval(secs => :settle)
         OR (tasks.updated_at > tasks.queued_at
             AND tasks.updated_at < coalesce(CAST(:read_at AS timestamptz), now())))
"""

# Per queue counted, the oldest of its queued tasks that its messages fall short of, and
# every NEW task reserved long ago and never confirmed.
_UNQUEUE_STALE = sa.text(f"""
    WITH counted AS (
        SELECT broker.queue,
               (SELECT count(*) FROM tasks WHERE tasks.queue = broker.queue AND {_SETTLED})
                   - broker.messages AS owed
        FROM unnest(CAST(:queues AS text[]), CAST(:messages AS bigint[]))
            AS broker(queue, messages)
    ), lost AS (
        SELECT oldest.id FROM counted CROSS JOIN LATERAL (
            SELECT id FROM tasks
            WHERE tasks.queue = counted.queue AND tasks.status = 'PENDING' AND {_OLD}
            ORDER BY queued_at LIMIT greatest(counted.owed, 0)) AS oldest
    )
    UPDATE tasks SET queued_at = NULL
    WHERE id = ANY(ARRAY(
        SELECT id FROM tasks
        WHERE id IN (SELECT id FROM lost
                     UNION ALL
                     SELECT id FROM tasks WHERE status = 'NEW' AND {_OLD})
          AND {_OLD}
        ORDER BY queued_at LIMIT :limit FOR UPDATE SKIP LOCKED))
      AND {_OLD} AND status IN ('NEW', 'PENDING')
""")

# Under a cap, a PENDING task that is due already waits for its tenant's room, which the
# relay looks for each interval: it is no reason to wake sooner.
_NEXT_DUE = sa.text(f"""
    SELECT min(available_at) FROM tasks
    WHERE {_UNQUEUED} AND (status = 'NEW' OR :cap = 0 OR available_at > now())
""")
