"""The state of the whole queue, read for metrics and autoscaling."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from services.core.db.base import StoreBase
from services.core.domain import (
    Priority,
)


@dataclass(frozen=True, slots=True)
class Gauges:
    """The state of the whole queue, for metrics and autoscaling."""

    # (priority, "ready" | "running") -> tasks; every pair present, zero included.
    depth: dict[tuple[Priority, str], int]
    outbox_backlog: int
    outbox_oldest_age: float
    # Running tasks whose lease ran out and that recovery has not handed back yet.
    lease_expired: int


@dataclass(frozen=True, slots=True)
class WorkerGauges:
    """The registered workers that are not gone, by the queues they consume."""

    # (queue, "alive" | "draining") -> workers; only pairs that have some.
    workers: dict[tuple[str, str], int]
    # queue -> slots of its alive workers (draining ones take no more work).
    slots: dict[str, int]


class GaugeReads(StoreBase):
    """Counts over every tenant: depth by priority, outbox backlog, expired leases; and
    the workers."""

    async def count_in_progress(self) -> int:
        """How many tasks are running now."""
        async with self._begin() as connection:
            return int((await connection.execute(_IN_PROGRESS)).scalar() or 0)

    async def gauges(self) -> Gauges:
        """Queue depth by priority, and the outbox backlog, in two reads (how long tasks
        wait is read per queue: QueueStates)."""
        depth = {(p, state): 0 for p in Priority for state in ("ready", "running")}
        async with self._begin() as connection:
            for row in await connection.execute(_DEPTH):
                depth[Priority.from_rank(row.priority), row.state] = row.tasks
            other = (await connection.execute(_OUTBOX_AND_LEASES)).one()
        return Gauges(depth, other.outbox, max(float(other.oldest or 0), 0.0), other.expired)

    async def worker_gauges(self) -> WorkerGauges:
        """Alive and draining workers, and alive workers' slots, by queue, in one read."""
        workers: dict[tuple[str, str], int] = {}
        slots: dict[str, int] = {}
        async with self._begin() as connection:
            for row in await connection.execute(_WORKERS):
                workers[row.queue, row.state] = row.workers
                if row.state == "alive":
                    slots[row.queue] = row.slots
        return WorkerGauges(workers, slots)


_IN_PROGRESS = sa.text("SELECT count(*) FROM tasks WHERE status = 'IN_PROGRESS'")

_DEPTH = sa.text("""
    SELECT priority,
           CASE WHEN status = 'IN_PROGRESS' THEN 'running' ELSE 'ready' END AS state,
           count(*) AS tasks
    FROM tasks
    WHERE status = 'IN_PROGRESS' OR (status IN ('NEW', 'PENDING') AND available_at <= now())
    GROUP BY 1, 2
""")

_OUTBOX_AND_LEASES = sa.text("""
    SELECT count(*) FILTER (WHERE status = 'NEW') AS outbox,
           extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'NEW')) AS oldest,
           count(*) FILTER (WHERE status = 'IN_PROGRESS' AND lease_expires_at < now())
               AS expired
    FROM tasks WHERE status IN ('NEW', 'IN_PROGRESS')
""")

# A worker is counted on every queue it consumes; a gone one (seen longer than its lease
# ago) on none.
_WORKERS = sa.text("""
    SELECT queue, CASE WHEN draining THEN 'draining' ELSE 'alive' END AS state,
           count(*) AS workers, sum(concurrency) AS slots
    FROM workers, unnest(queues) AS queue
    WHERE expires_at >= now()
    GROUP BY 1, 2
""")
