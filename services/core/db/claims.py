"""Workers' claims: fair share across tenants, then priority and aging; the running cap."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from services.core.db.base import PUBLIC, RETURNING, StoreBase, task_of
from services.core.domain import (
    Claim,
)


def _claim(row: Any) -> Claim:
    waited = max(float(row.waited), 0.0)
    # The order claim_many chose in: fair share, aged first, urgency, longest wait.
    rank = (row.share, not row.aged, row.urgency, -waited) if "share" in row._fields else ()
    return Claim(task_of(row), row.trace_context, waited, rank)


class Claims(StoreBase):
    """Take queued tasks for a worker's tickets, each claim one guarded UPDATE."""

    async def claim_many(
        self,
        worker_id: str,
        lease_seconds: float,
        aging_seconds: float,
        limit: int,
    ) -> list[Claim]:
        """Take up to `limit` queued tasks in one statement, fairly across tenants.

        Each slot goes to the tenant with the fewest running tasks (counting the ones this
        claim gives it), and not past the store's TENANT_MAX_RUNNING running tasks per
        tenant when set; claims then take turns, so the cap holds.
        Within a tenant, tasks that have waited longer than `aging_seconds` go first,
        oldest first, so that no priority starves; then HIGH before MEDIUM before LOW,
        oldest first. Between tenants with equal shares, the same order decides.
        """
        params = {
            "worker": worker_id,
            "lease": lease_seconds,
            "aging": aging_seconds,
            "limit": limit,
            "cap": self._cap,
        }
        rows = await self._claim_rows(_CLAIM_MANY, params)
        return sorted((_claim(row) for row in rows), key=lambda claim: claim.rank)

    async def claim_named(
        self, worker_id: str, lease_seconds: float, task_id: uuid.UUID
    ) -> Claim | None:
        """Take the task a message names, waiting if a relay still holds its row; not when
        its tenant runs TENANT_MAX_RUNNING tasks already."""
        params = {"worker": worker_id, "lease": lease_seconds, "id": task_id, "cap": self._cap}
        rows = await self._claim_rows(_CLAIM_NAMED, params)
        return _claim(rows[0]) if rows else None

    async def _claim_rows(self, statement: sa.TextClause, params: dict[str, Any]) -> list[Any]:
        if not params["cap"]:
            return await self._write(statement, params)
        # Under a cap, claims take turns: none counts a tenant's running tasks while
        # another is giving it more, so the cap holds exactly, whatever the claimers.
        async with self._begin(transaction=True) as connection:
            await connection.execute(_CLAIM_TURN)
            return list((await connection.execute(statement, params)).all())

    async def has_ready(self) -> bool:
        """True when some queued task holds a broker message, claimable yet or not (a task
        of a tenant at TENANT_MAX_RUNNING is not: see unqueue_one()).

        A claim that found nothing may have skipped rows that other claims held for a
        moment, or met a task whose message the broker has confirmed before the relay
        marked it PENDING: this tells a worker whether its message may still be owed a
        task, and so must not be dropped.
        """
        async with self._begin() as connection:
            return bool((await connection.execute(_HAS_READY, {"cap": self._cap})).scalar())

    async def unqueue_one(self, named: uuid.UUID | None) -> bool:
        """A message that claimed nothing is dropped: take `named` out of the queue if it
        is still there, else another queued task (which only a tenant at its
        TENANT_MAX_RUNNING can have now), so that no queued task is left without a
        message. The relay sends it a new one once its tenant has room. True when one was."""
        if not self._cap:  # then every queued task can be claimed: none is left
            return False
        async with self._begin() as connection:
            result = await connection.execute(_UNQUEUE_ONE, {"id": named})
        return bool(result.rowcount)


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
        WHERE status = 'PENDING' AND queued_at IS NOT NULL
        ORDER BY id = :id DESC, available_at DESC
        LIMIT 1
        FOR UPDATE)
      AND status = 'PENDING' AND queued_at IS NOT NULL
""")

# Claimable: in the queue, with a confirmed message, and due. Only such tasks are claimed,
# so that each message stands for exactly one task that was queued.
_CLAIMABLE = "status = 'PENDING' AND queued_at IS NOT NULL AND available_at <= now()"

# Returned with a claim: the trace context, and how long the task waited ready.
_CLAIM_EXTRA = "tasks.trace_context, extract(epoch FROM now() - tasks.available_at) AS waited"

_CLAIMED = """
    UPDATE tasks SET
        status = 'IN_PROGRESS',
        attempts = attempts + 1,
        started_at = now(),
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
# `share` is the tenant's running tasks once this task runs too; `urgency` its place
# among the tenant's own. Slots then go by share, so the tenant with the fewest running
# tasks is served first, and ties go by urgency, aged before the rest.
_CANDIDATES = f"""
    candidates AS (
        SELECT c.id, running.n + row_number() OVER (
                   PARTITION BY ready.tenant ORDER BY c.aged DESC, c.urgency, c.available_at
               ) AS share,
               c.aged, c.urgency, c.available_at
        FROM ready
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM tasks
            WHERE status = 'IN_PROGRESS' AND tenant = ready.tenant) AS running
        CROSS JOIN LATERAL (
            SELECT DISTINCT ON (id) id, aged, urgency, available_at FROM (
                (SELECT id, true AS aged, 0 AS urgency, available_at FROM tasks
                 WHERE tenant = ready.tenant AND {_CLAIMABLE}
                   AND available_at <= now() - make_interval(secs => :aging)
                 ORDER BY available_at LIMIT :limit + {_SPARE})
                UNION ALL
                (SELECT id, false, -priority, available_at FROM tasks
                 WHERE tenant = ready.tenant AND {_CLAIMABLE}
                 ORDER BY priority DESC, available_at LIMIT :limit + {_SPARE})
            ) AS both_lists
            ORDER BY id, aged DESC
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
        FROM (SELECT * FROM candidates WHERE :cap = 0 OR share <= :cap
              ORDER BY {_fair_order("candidates")} LIMIT :limit + {_SPARE}) AS best
        JOIN tasks ON tasks.id = best.id
        WHERE tasks.status = 'PENDING'
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
    WHERE id = :id AND status IN ('NEW', 'PENDING') AND queued_at IS NOT NULL
      AND available_at <= now() AND {_UNDER_CAP}
    RETURNING {RETURNING}, {_CLAIM_EXTRA}
""")

# Claimable, or queued with a message the relay has not marked PENDING yet.
_HAS_READY = sa.text(f"""
    SELECT EXISTS (SELECT 1 FROM tasks WHERE {_CLAIMABLE} AND {_UNDER_CAP})
        OR EXISTS (SELECT 1 FROM tasks WHERE status = 'NEW' AND queued_at IS NOT NULL)
""")
