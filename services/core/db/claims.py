"""Workers' claims: fair share across tenants, then priority and aging; the running cap."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from services.core.db.base import PUBLIC, RETURNING, StoreBase, task_of
from services.core.domain import DEFAULT_QUEUE, Claim, Queue, Status

_DEFAULT = Queue(DEFAULT_QUEUE)


def _claim(row: Any) -> Claim:
    waited = max(float(row.waited), 0.0)
    # The order claim_many chose in: fair share, aged first, urgency, longest wait.
    rank = (row.share, not row.aged, row.urgency, -waited) if "share" in row._fields else ()
    return Claim(task_of(row), row.trace_context, waited, rank, row.tenant)


class Claims(StoreBase):
    """Take queued tasks for a worker's tickets, each claim one guarded UPDATE."""

    async def claim_many(
        self,
        worker_id: str,
        lease_seconds: float,
        aging_seconds: float,
        limit: int,
        queue: Queue = _DEFAULT,
    ) -> list[Claim]:
        """Take up to `limit` queued tasks of `queue` in one statement, fairly across tenants,
        within the queue's limits and not while it is paused.

        Each slot goes to the tenant with the fewest running tasks in the queue (counting
        the ones this claim gives it), and not past the store's TENANT_MAX_RUNNING running
        tasks per tenant when set; claims then take turns, so the cap holds.
        Within a tenant, tasks that have waited longer than `aging_seconds` go first,
        oldest first, so that no priority starves; then HIGH before MEDIUM before LOW,
        oldest first. Between tenants with equal shares, the same order decides.
        """
        params = {
            "worker": worker_id,
            "lease": lease_seconds,
            "aging": aging_seconds,
            "limit": limit,
        }
        rows = await self._claimed(_CLAIM_MANY, params, queue)
        return sorted((_claim(row) for row in rows), key=lambda claim: claim.rank)

    async def claim_named(
        self, worker_id: str, lease_seconds: float, task_id: uuid.UUID, queue: Queue = _DEFAULT
    ) -> Claim | None:
        """Take the task a message names, waiting if a relay still holds its row; not when
        its tenant runs TENANT_MAX_RUNNING tasks already, nor past `queue`'s limits."""
        params = {"worker": worker_id, "lease": lease_seconds, "id": task_id, "limit": 1}
        rows = await self._claimed(_CLAIM_NAMED, params, queue)
        return _claim(rows[0]) if rows else None

    async def _claimed(
        self, statement: sa.TextClause, params: dict[str, Any], queue: Queue
    ) -> list[Any]:
        rows = await self._claim_rows(statement, params, queue)
        self.events.moved(Status.IN_PROGRESS, len(rows))
        return rows

    async def _claim_rows(
        self, statement: sa.TextClause, params: dict[str, Any], queue: Queue
    ) -> list[Any]:
        params = {**params, "cap": self._cap, "queue": queue.name}
        if not self._cap and not queue.limited:
            return await self._write(statement, params)
        # Under a cap or a queue's limits, claims take turns: none counts running tasks
        # (or the rate's next start) while another is adding to them, so limits hold
        # exactly, whatever the claimers.
        async with self._begin(transaction=True) as connection:
            if self._cap:
                await connection.execute(_CLAIM_TURN)
            if not queue.limited:
                return list((await connection.execute(statement, params)).all())
            await connection.execute(_QUEUE_TURN, {"queue": queue.name})
            room = (await connection.execute(_ROOM, _room_params(queue))).first()
            if room is None or room.paused or room.allowed <= 0:
                return []  # (None: the queue's row was made beside us: the next try reads it)
            params["limit"] = min(params["limit"], int(room.allowed))
            rows = list((await connection.execute(statement, params)).all())
            if queue.rate is not None and rows:
                spent = {"queue": queue.name, "start": room.start, "rate": queue.rate}
                last = max(row.started_at for row in rows)
                await connection.execute(_SPEND, {**spent, "last": last, "started": len(rows)})
            return rows

    async def blocked_for(self, queue: Queue) -> float | None:
        """Seconds until `queue` may have room for a claim, when it is paused or at one of
        its limits; None when it is not held back."""
        async with self._begin() as connection:
            row = (await connection.execute(_ROOM, _room_params(queue))).first()
        if row is None:  # its row was made beside this read: look again soon
            return _FULL_POLL
        if row.paused:
            return _PAUSED_POLL
        if row.allowed > 0:
            return None
        if queue.rate is not None and row.wait > 0:
            return float(row.wait)
        return _FULL_POLL

    async def has_ready(self, queue: str = DEFAULT_QUEUE) -> bool:
        """True when some queued task of `queue` holds a broker message, claimable yet or
        not (a task of a tenant at TENANT_MAX_RUNNING is not: see unqueue_one()).

        A claim that found nothing may have skipped rows that other claims held for a
        moment, met a task whose message the broker has confirmed before the relay
        marked it PENDING, or a queue held back by its limits or a pause: this tells a
        worker whether its message may still be owed a task, and so must not be dropped.
        """
        async with self._begin() as connection:
            params = {"cap": self._cap, "queue": queue}
            return bool((await connection.execute(_HAS_READY, params)).scalar())

    async def unqueue_one(self, named: uuid.UUID | None, queue: str = DEFAULT_QUEUE) -> bool:
        """A message that claimed nothing is dropped: take `named` out of the queue if it
        is still there, else another queued task of `queue` (which only a tenant at its
        TENANT_MAX_RUNNING can have now), so that no queued task is left without a
        message. The relay sends it a new one once its tenant has room. True when one was."""
        if not self._cap:  # then every queued task can be claimed: none is left
            return False
        async with self._begin() as connection:
            result = await connection.execute(_UNQUEUE_ONE, {"id": named, "queue": queue})
        return bool(result.rowcount)


def _room_params(queue: Queue) -> dict[str, Any]:
    rate = queue.rate
    # Starts a claim may make at once after a quiet spell: a tenth of a second's worth.
    burst = max(1, int(rate / 10)) if rate is not None else 1
    return {
        "queue": queue.name,
        "max_running": queue.max_running,
        "rate": rate,
        "burst": burst,
        # How far back unused starts count: the burst's worth of intervals.
        "spread": (burst - 1) / rate if rate is not None else 0.0,
    }


# How often a ticket of a paused queue, or of one at max_running, looks again.
_PAUSED_POLL = 1.0
_FULL_POLL = 0.2

# Taken by every claim of a limited queue, for the claim's transaction.
_QUEUE_TURN = sa.text("SELECT pg_advisory_xact_lock(hashtext('conveyor.queue.' || :queue))")

# What a limited queue lets a claim start now: `allowed` (max_running less its running
# tasks, and the starts its rate has earned since `start`, at most `burst`), and `start`,
# from which the rate counts. A rate keeps its next start in `queues`, made on first use.
_ROOM_SQL = """
    WITH made AS (
        INSERT INTO queues (name) VALUES (:queue) ON CONFLICT (name) DO NOTHING
        RETURNING paused, next_start
    ), state AS (
        SELECT paused, next_start FROM made
        UNION ALL
        SELECT paused, next_start FROM queues WHERE name = :queue
    ), counted AS (
        SELECT state.paused, clock.at,
               greatest(state.next_start, clock.at - make_interval(secs => :spread)) AS start,
               (SELECT count(*) FROM tasks WHERE status = 'IN_PROGRESS' AND queue = :queue)
                   AS running
        FROM state, (SELECT statement_timestamp() AS at) AS clock
    )
    SELECT paused, start,
           least(
               coalesce(CAST(:max_running AS int) - running, 1000000),
               CASE WHEN CAST(:rate AS float8) IS NULL THEN 1000000
                    WHEN start > at THEN 0
                    ELSE least(:burst, floor(extract(epoch FROM at - start) * :rate) + 1)
               END) AS allowed,
           extract(epoch FROM start - at) AS wait
    FROM counted
"""
_ROOM = sa.text(_ROOM_SQL)

# The rate's next start moves on by one interval per task started, counted from the
# last start as recorded: the starts of any second, as the tasks show them, keep the rate.
_SPEND = sa.text("""
    UPDATE queues
    SET next_start = greatest(CAST(:start AS timestamptz), CAST(:last AS timestamptz))
        + make_interval(secs => CAST(:started AS float8) / :rate)
    WHERE name = :queue
""")


# A tenant under TENANT_MAX_RUNNING (:cap, 0 for none), as a condition on a row of tasks.
_UNDER_CAP = """(:cap = 0 OR (SELECT count(*) FROM tasks AS running
    WHERE running.status = 'IN_PROGRESS' AND running.tenant = tasks.tenant) < :cap)"""
_UNQUEUED = "queued_at IS NULL AND status IN ('NEW', 'PENDING')"

# The named task if it is still queued, else another queued one: a message that claims
# nothing while tasks wait queued takes one of them out of the queue, so that the queued
# tasks never outnumber their messages. Only tasks of tenants at their cap can be there.
# It waits for a row another claim holds (that claim may take it; then the next is taken):
# skipping it could leave a queued task without a message.
_UNQUEUE_ONE = sa.text("""
    UPDATE tasks SET queued_at = NULL
    WHERE id = (
        SELECT id FROM tasks
        WHERE queue = :queue AND status = 'PENDING' AND queued_at IS NOT NULL
        ORDER BY id = :id DESC, available_at DESC
        LIMIT 1
        FOR UPDATE)
      AND status = 'PENDING' AND queued_at IS NOT NULL
""")

# Claimable: in the queue, with a confirmed message, and due. Only such tasks are claimed,
# so that each message stands for exactly one task that was queued.
_CLAIMABLE = (
    "queue = :queue AND status = 'PENDING' AND queued_at IS NOT NULL AND available_at <= now()"
)
# The queue is not paused.
_NOT_PAUSED = "NOT EXISTS (SELECT 1 FROM queues WHERE name = :queue AND paused)"

# Returned with a claim: the trace context, and how long the task waited ready.
_CLAIM_EXTRA = (
    "tasks.trace_context, tasks.tenant, extract(epoch FROM now() - tasks.available_at) AS waited"
)

_CLAIMED = """
    UPDATE tasks SET
        status = 'IN_PROGRESS',
        attempts = attempts + 1,
        started_at = statement_timestamp(),
        updated_at = now(),
        lease_expires_at = now() + make_interval(secs => :lease),
        worker_id = :worker
"""

_SPARE = 64

# The tenants with claimable work, one index probe each (a loose index scan).
_READY_TENANTS = f"""
    ready(tenant) AS (
        (SELECT tenant FROM tasks WHERE {_CLAIMABLE} ORDER BY tenant LIMIT 1)
        UNION ALL
        SELECT (SELECT tenant FROM tasks WHERE {_CLAIMABLE} AND tenant > ready.tenant
                ORDER BY tenant LIMIT 1)
        FROM ready WHERE ready.tenant IS NOT NULL
    )"""

# Each tenant's next tasks in its own order: the aged ones (oldest first), then the most
# urgent; each list read from its own tenant-led index, a task in both taken once. Each
# list holds _SPARE more than :limit, so that a claim running beside others (which lock
# the first tasks, and SKIP LOCKED passes over them) still finds :limit tasks to take.
# `share` is the tenant's running tasks in the queue once this task runs too, `held` in
# all queues (what TENANT_MAX_RUNNING caps); `urgency` its place among the tenant's own.
# Slots then go by share, so the tenant with the fewest running tasks in the queue is
# served first, and ties go by urgency, aged before the rest.
_CANDIDATES = f"""
    candidates AS (
        SELECT c.id, running.n + c.n AS share, held.n + c.n AS held,
               c.aged, c.urgency, c.available_at
        FROM ready
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM tasks
            WHERE status = 'IN_PROGRESS' AND queue = :queue AND tenant = ready.tenant
        ) AS running
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM tasks
            WHERE :cap > 0 AND status = 'IN_PROGRESS' AND tenant = ready.tenant) AS held
        CROSS JOIN LATERAL (
            SELECT *, row_number() OVER (ORDER BY aged DESC, urgency, available_at) AS n
            FROM (SELECT DISTINCT ON (id) id, aged, urgency, available_at FROM (
                (SELECT id, true AS aged, 0 AS urgency, available_at FROM tasks
                 WHERE tenant = ready.tenant AND {_CLAIMABLE}
                   AND available_at <= now() - make_interval(secs => :aging)
                 ORDER BY available_at LIMIT :limit + {_SPARE})
                UNION ALL
                (SELECT id, false, -priority, available_at FROM tasks
                 WHERE tenant = ready.tenant AND {_CLAIMABLE}
                 ORDER BY priority DESC, available_at LIMIT :limit + {_SPARE})
            ) AS both_lists
            ORDER BY id, aged DESC) AS once
        ) AS c
        WHERE ready.tenant IS NOT NULL
    )"""


def _fair_order(of: str) -> str:
    return f"{of}.share, {of}.aged DESC, {of}.urgency, {of}.available_at"


# Up to :limit tasks, fair share first. SKIP LOCKED lets claimers pass each other; the
# outer WHERE re-checks the status, so the UPDATE is guarded on its own. The best few
# candidates are chosen before the join, so that tasks is read by its key, row by row.
_CLAIM_MANY = sa.text(f"""
    WITH RECURSIVE {_READY_TENANTS}, {_CANDIDATES}, pick AS (
        SELECT tasks.id, best.share, best.aged, best.urgency
        FROM (SELECT * FROM candidates WHERE :cap = 0 OR held <= :cap
              ORDER BY {_fair_order("candidates")} LIMIT :limit + {_SPARE}) AS best
        JOIN tasks ON tasks.id = best.id
        WHERE tasks.status = 'PENDING' AND {_NOT_PAUSED}
        ORDER BY {_fair_order("best")}
        LIMIT :limit
        FOR UPDATE OF tasks SKIP LOCKED
    )
    {_CLAIMED}
    FROM pick
    WHERE tasks.id = pick.id AND tasks.status = 'PENDING'
    RETURNING {", ".join(f"tasks.{column.name}" for column in PUBLIC)}, {_CLAIM_EXTRA},
        pick.share, pick.aged, pick.urgency
""")

# Taken first by every claim under a cap, for the claim's transaction: claims take turns.
_CLAIM_TURN = sa.text("SELECT pg_advisory_xact_lock(hashtext('conveyor.tasks.claims'))")

# The task a message names, waiting for its row lock (a relay may still hold it, between
# the broker's confirm and its own commit); only while it is queued, since a task taken out
# of the queue has had its message answered already (unqueue_one).
_CLAIM_NAMED = sa.text(f"""
    {_CLAIMED}
    WHERE id = :id AND queue = :queue AND status IN ('NEW', 'PENDING')
      AND queued_at IS NOT NULL AND available_at <= now() AND {_UNDER_CAP} AND {_NOT_PAUSED}
    RETURNING {RETURNING}, {_CLAIM_EXTRA}
""")

# Claimable, or queued with a message the relay has not marked PENDING yet.
_HAS_READY = sa.text(f"""
    SELECT EXISTS (SELECT 1 FROM tasks WHERE {_CLAIMABLE} AND {_UNDER_CAP})
        OR EXISTS (SELECT 1 FROM tasks
                   WHERE queue = :queue AND status = 'NEW' AND queued_at IS NOT NULL)
""")
