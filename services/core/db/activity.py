"""One tenant's activity by queue, for the console's overview: what waits, what runs, and
what started, completed and failed minute by minute. Every read is bounded, so the
overview answers as fast with ten million tasks as with ten."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from services.core.db.base import StoreBase
from services.core.domain import Priority

# Ready tasks are counted up to this many per queue and priority ("10,000 or more").
COUNT_CAP = 10_000
# Finished tasks of each status read for the minute series at most, every tenant's (the
# newest): the work is bounded whatever the installation's throughput and whoever asks;
# past it the series holds only the latest part of the window.
WINDOW_ROWS = 20_000
WINDOW_MINUTES = 15


@dataclass(frozen=True, slots=True)
class Minute:
    at: datetime
    started: int = 0
    completed: int = 0
    failed: int = 0


@dataclass(slots=True)
class QueueActivity:
    """One queue as one tenant sees it."""

    name: str
    paused: bool = False
    # Ready (queued and due) tasks by priority, each counted up to COUNT_CAP.
    ready: dict[Priority, int] = field(default_factory=dict)
    running: int = 0
    oldest_ready_at: datetime | None = None
    minutes: list[Minute] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Activity:
    queues: list[QueueActivity]
    now: datetime
    # False when more tasks finished in the window than were read: the series then
    # starts later than the window.
    window_complete: bool


class TenantActivity(StoreBase):
    async def activity(self, tenant: str, queues: list[str]) -> Activity:
        """The tenant's activity on each of `queues`, in that order."""
        async with self._begin() as connection:
            now: datetime = (await connection.execute(sa.select(sa.func.now()))).scalar_one()
            start = now.replace(second=0, microsecond=0) - timedelta(minutes=WINDOW_MINUTES - 1)
            params = {
                "tenant": tenant,
                "queues": queues,
                "cap": COUNT_CAP,
                "rows": WINDOW_ROWS,
                "since": start,
            }
            paused = {row.name for row in await connection.execute(_PAUSED, params)}
            ready = list(await connection.execute(_READY, params))
            running = {row.queue: row.n for row in await connection.execute(_RUNNING, params)}
            finished = list(await connection.execute(_FINISHED, params))
        by_name = {name: QueueActivity(name, name in paused) for name in queues}
        for row in ready:
            queue = by_name[row.queue]
            if row.n:
                queue.ready[Priority.from_rank(row.priority)] = row.n
            if row.oldest is not None and (
                queue.oldest_ready_at is None or row.oldest < queue.oldest_ready_at
            ):
                queue.oldest_ready_at = row.oldest
        for name, count in running.items():
            if name in by_name:
                by_name[name].running = count
        counts: dict[tuple[str, datetime], dict[str, int]] = defaultdict(
            lambda: {"started": 0, "completed": 0, "failed": 0}
        )
        scanned = {row.what: row.n for row in finished if row.queue is None}
        for row in finished:
            if row.queue is not None:
                counts[row.queue, row.minute][row.what] += row.n
        for queue in by_name.values():
            queue.minutes = [
                Minute(at, **counts.get((queue.name, at), {}))
                for at in (start + timedelta(minutes=n) for n in range(WINDOW_MINUTES))
            ]
        complete = max(scanned.values(), default=0) < WINDOW_ROWS
        return Activity(list(by_name.values()), now, complete)


_PAUSED = sa.text("SELECT name FROM queues WHERE paused AND name = ANY(CAST(:queues AS text[]))")

# Per queue and priority: the ready tasks (index-only, from the claim index), counted up
# to :cap, and the longest-waiting one's ready time.
_READY = sa.text("""
    SELECT q.name AS queue, p.rank AS priority,
        (SELECT count(*) FROM (
            SELECT 1 FROM tasks
            WHERE queue = q.name AND tenant = :tenant AND priority = p.rank
              AND status = 'PENDING' AND queued_at IS NOT NULL AND available_at <= now()
            LIMIT :cap) AS capped) AS n,
        (SELECT min(available_at) FROM tasks
            WHERE queue = q.name AND tenant = :tenant AND priority = p.rank
              AND status = 'PENDING' AND queued_at IS NOT NULL) AS oldest
    FROM unnest(CAST(:queues AS text[])) AS q(name), (VALUES (1), (2), (3)) AS p(rank)
""")

# Running tasks: bounded by the workers' slots.
_RUNNING = sa.text("""
    SELECT queue, count(*) AS n FROM tasks
    WHERE tenant = :tenant AND status = 'IN_PROGRESS'
    GROUP BY queue
""")

# Tasks that finished in the window: the newest :rows of each status, every tenant's, read
# backwards along ix_tasks_finished (one ordered scan per status, never the whole table);
# of them the caller's, by minute of their finish and of their start, and its running
# ones by their start; and, with no queue, how many of each status were read.
_FINISHED = sa.text("""
    WITH scanned AS (
        (SELECT tenant, queue, status, started_at, finished_at FROM tasks
         WHERE status = 'COMPLETED' AND finished_at >= :since
         ORDER BY finished_at DESC LIMIT :rows)
        UNION ALL
        (SELECT tenant, queue, status, started_at, finished_at FROM tasks
         WHERE status = 'FAILED' AND finished_at >= :since
         ORDER BY finished_at DESC LIMIT :rows)
    ), recent AS (
        SELECT * FROM scanned WHERE tenant = :tenant
    ), events AS (
        SELECT queue, lower(status) AS what, finished_at AS at FROM recent
        UNION ALL
        SELECT queue, 'started', started_at FROM recent WHERE started_at >= :since
        UNION ALL
        SELECT queue, 'started', started_at FROM tasks
        WHERE tenant = :tenant AND status = 'IN_PROGRESS' AND started_at >= :since
    )
    SELECT queue, what, date_trunc('minute', at) AS minute, count(*) AS n
    FROM events GROUP BY 1, 2, 3
    UNION ALL
    SELECT NULL, status, NULL, count(*) FROM scanned GROUP BY status
""")
