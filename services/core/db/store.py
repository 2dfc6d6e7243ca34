"""The PostgreSQL task store. Every status change is one guarded UPDATE, never read-then-write."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.core.auth import DEFAULT_TENANT
from services.core.db.engine import connect
from services.core.db.tables import tasks
from services.core.domain import (
    NewTask,
    Page,
    Priority,
    Status,
    Task,
    TaskFilter,
    in_range,
)
from services.core.errors import (
    IdempotencyConflict,
    TaskAlreadyTerminal,
    TaskNotFound,
)

logger = logging.getLogger(__name__)

# Deadlock detected, serialization failure: the statement did nothing and may run again.
_CONFLICTS = frozenset({"40P01", "40001"})
_CONFLICT_RETRIES = 5

_PUBLIC = [
    tasks.c[name]
    for name in (
        "id", "title", "description", "priority", "status", "kind", "payload", "result",
        "error", "attempts", "max_attempts", "timeout_seconds", "created_at", "updated_at",
        "scheduled_at", "started_at", "finished_at", "cancel_requested",
    )
]
_RETURNING = ", ".join(column.name for column in _PUBLIC)


@dataclass(frozen=True, slots=True)
class Gauges:
    """The state of the whole queue, for metrics and autoscaling."""

    # (priority, "ready" | "running") -> tasks; every pair present, zero included.
    depth: dict[tuple[Priority, str], int]
    # priority -> seconds the oldest ready task has waited (0 when none).
    oldest_ready_age: dict[Priority, float]
    outbox_backlog: int
    outbox_oldest_age: float
    # Running tasks whose lease ran out and that recovery has not handed back yet.
    lease_expired: int


class InvalidCursor(ValueError):
    """A listing cursor that this service did not make."""


def _is_conflict(error: DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) in _CONFLICTS


def _task(row: Any) -> Task:
    values = {column.name: row._mapping[column.name] for column in _PUBLIC}
    values["priority"] = Priority.from_rank(values["priority"])
    values["status"] = Status(values["status"])
    return Task(**values)


def _claim(row: Any) -> Claim:
    waited = max(float(row.waited), 0.0)
    # The order claim_many chose in: fair share, aged first, urgency, longest wait.
    rank = (row.share, not row.aged, row.urgency, -waited) if "share" in row._fields else ()
    return Claim(_task(row), row.trace_context, waited, rank)


def encode_cursor(task: Task) -> str:
    """The opaque cursor that continues a newest-first walk after `task`."""
    raw = f"{task.created_at.isoformat()}|{task.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position `cursor` names; InvalidCursor when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, task_id = raw.split("|")
        position = datetime.fromisoformat(created_at), uuid.UUID(task_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise InvalidCursor("not a cursor from this service") from error
    # Aware and finite for PostgreSQL too: in_range compares before any conversion to UTC.
    if position[0].tzinfo is None or not in_range(position[0]):
        raise InvalidCursor("not a cursor from this service")
    return position


@dataclass(frozen=True, slots=True)
class Claim:
    """A task a worker holds, and the attempt number that fences its writes."""

    task: Task
    # The task's trace context, and how long it waited ready before this claim.
    trace_context: dict[str, str] | None = None
    waited_seconds: float = 0.0
    # The order in which one claim statement chose its tasks (fair share, then urgency).
    rank: tuple[Any, ...] = ()

    @property
    def attempt(self) -> int:
        return self.task.attempts


@dataclass(frozen=True, slots=True)
class Recovered:
    """A task taken back from a lost holder, and where it went."""

    id: uuid.UUID
    status: Status
    attempts: int
    trace_context: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What renewing a worker's leases found."""

    held: frozenset[uuid.UUID]
    cancel_requested: frozenset[uuid.UUID]


class SqlTaskStore:
    """Tasks in PostgreSQL. Raises StoreUnavailable when the server cannot be reached."""

    def __init__(self, engine: AsyncEngine, tenant_cap: int = 0) -> None:
        self._engine = engine
        # TENANT_MAX_RUNNING: a tenant at it gets no claim, and its tasks no new message.
        self._cap = tenant_cap
        # Every write is one guarded statement, atomic on its own: no BEGIN and COMMIT
        # round trips around it. Only the relay's batch needs a transaction.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def _begin(self, transaction: bool = False) -> AbstractAsyncContextManager[AsyncConnection]:
        return connect(self._engine if transaction else self._autocommit, transaction=transaction)

    async def _write(self, statement: sa.TextClause, params: dict[str, Any]) -> list[Any]:
        """Run one statement that changes many rows; its rows. Such statements lock rows in
        id order, but a lock taken by another statement in another order (a foreign
        client, a future query) can still make PostgreSQL abort one of two: that one
        runs again, so no batch of results is ever dropped for it."""
        for attempt in range(1, _CONFLICT_RETRIES + 1):
            try:
                async with self._begin() as connection:
                    return (await connection.execute(statement, params)).all()
            except DBAPIError as error:
                if not _is_conflict(error) or attempt == _CONFLICT_RETRIES:
                    raise
                logger.warning("statement aborted by a lock conflict; running it again: %s",
                               error.orig)
                await asyncio.sleep(random.uniform(0, 0.01 * attempt))
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        """Raise StoreUnavailable unless PostgreSQL answers."""
        async with self._begin() as connection:
            await connection.execute(sa.text("SELECT 1"))

    # --- clients -------------------------------------------------------------------------

    async def create(
        self, new: NewTask, idempotency_key: str | None = None, request_hash: str | None = None,
        trace_context: dict[str, str] | None = None, tenant: str = DEFAULT_TENANT,
    ) -> tuple[Task, bool]:
        """Store `new` for `tenant`; answer (task, True), or (earlier task, False) for a
        key this tenant used before."""
        values = _insert_values(new, idempotency_key, request_hash)
        values["trace_context"] = trace_context or None
        values["tenant"] = tenant
        async with self._begin() as connection:
            row = (await connection.execute(_INSERT, values)).first()
            if row is not None:
                return _task(row), True
            params = {"key": idempotency_key, "tenant": tenant}
            found = (await connection.execute(_BY_KEY, params)).first()
        if found is None:  # the earlier task was deleted between the two statements
            raise IdempotencyConflict(idempotency_key or "")
        if found.request_hash != request_hash:
            raise IdempotencyConflict(idempotency_key or "")
        return _task(found), False

    async def get(self, task_id: uuid.UUID, tenant: str | None = None) -> Task:
        """The task `task_id`, or TaskNotFound; also when it belongs to another `tenant`."""
        async with self._begin() as connection:
            row = (await connection.execute(_by_id(task_id, tenant))).first()
        if row is None:
            raise TaskNotFound(task_id)
        return _task(row)

    async def list(self, where: TaskFilter, limit: int, cursor: str | None = None) -> Page:
        """Tasks matching `where`, newest first, `limit` at a time, from `cursor` on."""
        query = _select().where(*_conditions(where))
        if cursor is not None:
            created_at, task_id = decode_cursor(cursor)
            query = query.where(sa.tuple_(tasks.c.created_at, tasks.c.id) < (created_at, task_id))
        query = query.order_by(tasks.c.created_at.desc(), tasks.c.id.desc()).limit(limit + 1)
        async with self._begin() as connection:
            items = [_task(row) for row in await connection.execute(query)]
        more = len(items) > limit
        items = items[:limit]
        return Page(items, encode_cursor(items[-1]) if more else None)

    async def cancel(self, task_id: uuid.UUID, tenant: str | None = None) -> Task:
        """Cancel a queued task at once, or ask the holder of a running one to stop.

        Answers the task as it now stands; raises TaskNotFound (also for a task of another
        `tenant`) or TaskAlreadyTerminal.
        """
        params = {"id": task_id, "tenant": tenant}
        async with self._begin() as connection:
            for statement in (_CANCEL_QUEUED, _REQUEST_CANCEL):
                row = (await connection.execute(statement, params)).first()
                if row is not None:
                    return _task(row)
            row = (await connection.execute(_by_id(task_id, tenant))).first()
        if row is None:
            raise TaskNotFound(task_id)
        task = _task(row)
        if task.status.is_terminal:
            raise TaskAlreadyTerminal(task_id, task.status)
        # It moved between the statements (queued to running); the caller may ask again.
        return await self.cancel(task_id, tenant)

    async def gauges(self) -> Gauges:
        """Queue depth and oldest wait by priority, and the outbox backlog, in two reads."""
        depth = {(p, state): 0 for p in Priority for state in ("ready", "running")}
        oldest = dict.fromkeys(Priority, 0.0)
        async with self._begin() as connection:
            for row in await connection.execute(_DEPTH):
                priority = Priority.from_rank(row.priority)
                depth[priority, row.state] = row.tasks
                if row.state == "ready":
                    oldest[priority] = max(float(row.oldest), 0.0)
            other = (await connection.execute(_OUTBOX_AND_LEASES)).one()
        return Gauges(depth, oldest, other.outbox, max(float(other.oldest or 0), 0.0),
                      other.expired)

    # --- the relay ------------------------------------------------------------------------

    async def reserve_due(self, limit: int) -> dict[uuid.UUID, dict[str, str] | None]:
        """Take up to `limit` due tasks that need a broker message, oldest first.

        Marks them as having a message (queued_at), so that no other relay sends one too,
        and answers their trace contexts. The caller publishes, then confirm_queued(), or
        release() when the broker would not confirm. A relay that dies in between leaves
        them to resend_lost(): nothing waits on a lock meanwhile.
        """
        async with self._begin() as connection:
            rows = await connection.execute(_RESERVE, {"limit": limit, "cap": self._cap})
            return {row.id: row.trace_context for row in rows}

    async def confirm_queued(self, ids: Sequence[uuid.UUID]) -> int:
        """The broker confirmed their messages: NEW becomes PENDING. Answers how many did."""
        if not ids:
            return 0
        return len(await self._write(_CONFIRM, {"ids": list(ids)}))

    async def release(self, ids: Sequence[uuid.UUID]) -> None:
        """Their messages were not confirmed: the relay owes them one again."""
        await self._write(_RELEASE, {"ids": list(ids)})

    async def unqueue_stale(self, older_than: float, limit: int, *, queue_empty: bool) -> int:
        """Owe a new message to tasks whose message is not coming, after `older_than` s.

        Always for NEW tasks reserved that long ago and never confirmed (their relay died
        between reserving and publishing). With `queue_empty`, also for PENDING tasks
        queued that long ago: the broker holds no message for them any more (a purge, a
        node lost with its data, a delivery limit). Answers how many.
        """
        params = {"older": older_than, "limit": limit, "pending": queue_empty}
        async with self._begin() as connection:
            result = await connection.execute(_UNQUEUE_STALE, params)
        return int(result.rowcount)

    async def next_due(self) -> datetime | None:
        """When the next task that needs a broker message becomes due, if any."""
        async with self._begin() as connection:
            return (await connection.execute(_NEXT_DUE, {"cap": self._cap})).scalar()

    # --- workers --------------------------------------------------------------------------

    async def claim_many(
        self, worker_id: str, lease_seconds: float, aging_seconds: float, limit: int,
        tenant_cap: int | None = None,
    ) -> list[Claim]:
        """Take up to `limit` queued tasks in one statement, fairly across tenants.

        Each slot goes to the tenant with the fewest running tasks (counting the ones this
        claim gives it), and not past `tenant_cap` (else the store's TENANT_MAX_RUNNING)
        running tasks per tenant when set; claims then take turns, so the cap holds.
        Within a tenant, tasks that have waited longer than `aging_seconds` go first,
        oldest first, so that no priority starves; then HIGH before MEDIUM before LOW,
        oldest first. Between tenants with equal shares, the same order decides.
        """
        params = {"worker": worker_id, "lease": lease_seconds, "aging": aging_seconds,
                  "limit": limit, "cap": self._cap if tenant_cap is None else tenant_cap}
        rows = await self._claim_rows(_CLAIM_MANY, params)
        return sorted((_claim(row) for row in rows), key=lambda claim: claim.rank)

    async def claim(
        self, worker_id: str, lease_seconds: float, aging_seconds: float,
        named: uuid.UUID | None = None,
    ) -> Claim | None:
        """Take the task claim_many() would take first, or else the task `named`.

        None when neither can be had.
        """
        claims = await self.claim_many(worker_id, lease_seconds, aging_seconds, 1)
        if claims:
            return claims[0]
        return await self.claim_named(worker_id, lease_seconds, named) if named else None

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
            return (await connection.execute(statement, params)).all()

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

    async def complete(self, task_id: uuid.UUID, attempt: int, result: Any) -> Status | None:
        """Record the result of `attempt`; None when that attempt no longer holds the task.

        A task whose cancel was requested ends CANCELLED instead: terminal means terminal.
        """
        params = {"id": task_id, "attempt": attempt, "result": result}
        return await self._finish(_COMPLETE, params)

    async def complete_many(
        self, results: Sequence[tuple[uuid.UUID, int, Any]]
    ) -> list[Status | None]:
        """complete() for many (task, attempt, result) at once, in one statement."""
        params = {
            "ids": [task_id for task_id, _, _ in results],
            "attempts": [attempt for _, attempt, _ in results],
            "results": [json.dumps(result) for _, _, result in results],
        }
        rows = await self._write(_COMPLETE_MANY, params)
        done = {(row.id, row.attempts): Status(row.status) for row in rows}
        return [done.get((task_id, attempt)) for task_id, attempt, _ in results]

    async def fail(
        self, task_id: uuid.UUID, attempt: int, error: str, retry_in: float | None
    ) -> Status | None:
        """Record that `attempt` failed; retry after `retry_in` seconds while attempts last.

        `retry_in=None` fails the task for good. None when the attempt was fenced off.
        """
        params = {
            "id": task_id, "attempt": attempt, "error": error,
            "retry": retry_in is not None, "delay": retry_in or 0.0,
        }
        return await self._finish(_FAIL, params)

    async def mark_cancelled(self, task_id: uuid.UUID, attempt: int) -> Status | None:
        """Record that `attempt` stopped on a cancel request."""
        return await self._finish(_CANCELLED, {"id": task_id, "attempt": attempt})

    async def hand_back(self, task_id: uuid.UUID, attempt: int) -> Status | None:
        """Put a task its holder could not finish back in the queue, its attempt uncounted."""
        return await self._finish(_HAND_BACK, {"id": task_id, "attempt": attempt})

    async def _finish(self, statement: sa.TextClause, params: dict[str, Any]) -> Status | None:
        async with self._begin() as connection:
            status = (await connection.execute(statement, params)).scalar()
        return Status(status) if status is not None else None

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
        return await self._recover(_RECOVER_WORKER, {"worker": worker_id,
                                                     "before": claimed_before})

    async def count_in_progress(self) -> int:
        """How many tasks are running now."""
        async with self._begin() as connection:
            return int((await connection.execute(_IN_PROGRESS)).scalar() or 0)

    async def _recover(self, statement: sa.TextClause, params: dict[str, Any]) -> list[Recovered]:
        rows = await self._write(statement, params)
        return [Recovered(row.id, Status(row.status), row.attempts, row.trace_context)
                for row in rows]

    async def heartbeat(
        self, worker_id: str, held: Sequence[tuple[uuid.UUID, int]], lease_seconds: float
    ) -> Heartbeat:
        """Renew the leases of every task in `held` in one statement.

        Answers which of them this worker still holds, and which have a cancel requested.
        """
        if not held:
            return Heartbeat(frozenset(), frozenset())
        params = {
            "worker": worker_id, "lease": lease_seconds,
            "ids": [task_id for task_id, _ in held], "attempts": [attempt for _, attempt in held],
        }
        rows = await self._write(_HEARTBEAT, params)
        return Heartbeat(
            frozenset(row.id for row in rows),
            frozenset(row.id for row in rows if row.cancel_requested),
        )


def _select() -> sa.Select[Any]:
    return sa.select(*_PUBLIC)


def _by_id(task_id: uuid.UUID, tenant: str | None) -> sa.Select[Any]:
    query = _select().where(tasks.c.id == task_id)
    return query if tenant is None else query.where(tasks.c.tenant == tenant)


def _conditions(where: TaskFilter) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if where.tenant is not None:
        conditions.append(tasks.c.tenant == where.tenant)
    if where.statuses:
        conditions.append(tasks.c.status.in_(sorted(where.statuses)))
    if where.priorities:
        conditions.append(tasks.c.priority.in_(sorted(p.rank for p in where.priorities)))
    if where.kind is not None:
        conditions.append(tasks.c.kind == where.kind)
    if where.created_after is not None:
        conditions.append(tasks.c.created_at > where.created_after)
    if where.created_before is not None:
        conditions.append(tasks.c.created_at < where.created_before)
    return conditions


def _insert_values(
    new: NewTask, idempotency_key: str | None, request_hash: str | None
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "title": new.title,
        "description": new.description,
        "priority": new.priority.rank,
        "kind": new.kind,
        "payload": new.payload,
        "max_attempts": new.max_attempts,
        "timeout_seconds": new.timeout_seconds,
        "scheduled_at": new.scheduled_at,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
    }


_bind_json = sa.bindparam("payload", type_=tasks.c.payload.type)

# A task scheduled for later waits as PENDING; the relay sends its message once it is due.
_INSERT = sa.text(f"""
    INSERT INTO tasks (id, tenant, title, description, priority, status, kind, payload,
                       max_attempts, timeout_seconds, scheduled_at, available_at,
                       idempotency_key, request_hash, trace_context)
    VALUES (:id, :tenant, :title, :description, :priority,
            CASE WHEN :scheduled_at > now() THEN 'PENDING' ELSE 'NEW' END,
            :kind, :payload, :max_attempts, :timeout_seconds, :scheduled_at,
            greatest(now(), coalesce(:scheduled_at, now())),
            :idempotency_key, :request_hash, :trace_context)
    ON CONFLICT (tenant, idempotency_key) DO NOTHING
    RETURNING {_RETURNING}
""").bindparams(
    _bind_json, sa.bindparam("scheduled_at", type_=sa.DateTime(timezone=True)),
    sa.bindparam("trace_context", type_=tasks.c.trace_context.type),
)

_BY_KEY = sa.text(f"""
    SELECT {_RETURNING}, request_hash FROM tasks
    WHERE tenant = :tenant AND idempotency_key = :key
""")

# A NULL :tenant matches every tenant: the unscoped form, for operators and tests.
_OF_TENANT = "(CAST(:tenant AS text) IS NULL OR tenant = :tenant)"

_CANCEL_QUEUED = sa.text(f"""
    UPDATE tasks SET status = 'CANCELLED', finished_at = now(), updated_at = now()
    WHERE id = :id AND status IN ('NEW', 'PENDING') AND {_OF_TENANT}
    RETURNING {_RETURNING}
""")

_REQUEST_CANCEL = sa.text(f"""
    UPDATE tasks SET cancel_requested = true, updated_at = now()
    WHERE id = :id AND status = 'IN_PROGRESS' AND {_OF_TENANT}
    RETURNING {_RETURNING}
""")

_DEPTH = sa.text("""
    SELECT priority,
           CASE WHEN status = 'IN_PROGRESS' THEN 'running' ELSE 'ready' END AS state,
           count(*) AS tasks,
           extract(epoch FROM now() - min(available_at)) AS oldest
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

# A tenant under TENANT_MAX_RUNNING (:cap, 0 for none), as a condition on a row of tasks.
_UNDER_CAP = """(:cap = 0 OR (SELECT count(*) FROM tasks AS running
    WHERE running.status = 'IN_PROGRESS' AND running.tenant = tasks.tenant) < :cap)"""
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
    RETURNING id, trace_context
""")

# Statements that change many given rows lock them first, in id order: two of them
# (a worker's results and its lease renewal, say) then never wait on each other in a cycle.
def _in_id_order(ids: str) -> str:
    return f"tasks.id = ANY(ARRAY(SELECT id FROM tasks WHERE id = ANY({ids}) ORDER BY id " \
           "FOR UPDATE))"


_CONFIRM = sa.text(f"""
    UPDATE tasks SET status = 'PENDING', updated_at = now()
    WHERE {_in_id_order(":ids")} AND status = 'NEW'
    RETURNING id
""")

_RELEASE = sa.text(f"""
    UPDATE tasks SET queued_at = NULL
    WHERE {_in_id_order(":ids")} AND status IN ('NEW', 'PENDING')
    RETURNING id
""")

_STALE = """
    queued_at < now() - make_interval(secs => :older)
    AND (status = 'NEW' OR (:pending AND status = 'PENDING'))
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
    RETURNING {", ".join(f"tasks.{column.name}" for column in _PUBLIC)}, {_CLAIM_EXTRA},
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
    RETURNING {_RETURNING}, {_CLAIM_EXTRA}
""")

# Claimable, or queued with a message the relay has not marked PENDING yet.
_HAS_READY = sa.text(f"""
    SELECT EXISTS (SELECT 1 FROM tasks WHERE {_CLAIMABLE} AND {_UNDER_CAP})
        OR EXISTS (SELECT 1 FROM tasks WHERE status = 'NEW' AND queued_at IS NOT NULL)
""")

_FENCE = "WHERE id = :id AND status = 'IN_PROGRESS' AND attempts = :attempt"

_COMPLETE = sa.text(f"""
    UPDATE tasks SET
        status = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'COMPLETED' END,
        result = CASE WHEN cancel_requested THEN NULL ELSE :result END,
        finished_at = now(), updated_at = now(), lease_expires_at = NULL
    {_FENCE}
    RETURNING status
""").bindparams(sa.bindparam("result", type_=tasks.c.result.type))

_COMPLETE_MANY = sa.text(f"""
    UPDATE tasks SET
        status = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'COMPLETED' END,
        result = CASE WHEN cancel_requested THEN NULL ELSE done.result END,
        finished_at = now(), updated_at = now(), lease_expires_at = NULL
    FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS integer[]), CAST(:results AS jsonb[]))
        AS done(id, attempt, result)
    WHERE {_in_id_order("CAST(:ids AS uuid[])")}
      AND tasks.id = done.id AND tasks.status = 'IN_PROGRESS' AND tasks.attempts = done.attempt
    RETURNING tasks.id, tasks.attempts, tasks.status
""")

_FAIL = sa.text(f"""
    UPDATE tasks SET
        status = CASE
            WHEN cancel_requested THEN 'CANCELLED'
            WHEN :retry AND attempts < max_attempts THEN 'PENDING'
            ELSE 'FAILED' END,
        error = :error,
        available_at = now() + make_interval(secs => :delay),
        queued_at = NULL,
        finished_at = CASE
            WHEN :retry AND attempts < max_attempts AND NOT cancel_requested THEN NULL
            ELSE now() END,
        updated_at = now(), lease_expires_at = NULL
    {_FENCE}
    RETURNING status
""")

_CANCELLED = sa.text(f"""
    UPDATE tasks SET status = 'CANCELLED', finished_at = now(), updated_at = now(),
        lease_expires_at = NULL
    {_FENCE}
    RETURNING status
""")

# The holder stops cleanly and writes this itself, so the attempt number can be given
# back without a stale holder ever sharing it.
_HAND_BACK = sa.text(f"""
    UPDATE tasks SET
        status = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'PENDING' END,
        finished_at = CASE WHEN cancel_requested THEN now() END,
        attempts = attempts - 1, available_at = now(), queued_at = NULL,
        updated_at = now(), lease_expires_at = NULL
    {_FENCE}
    RETURNING status
""")

_RECOVER = """
    UPDATE tasks SET
        status = CASE
            WHEN cancel_requested THEN 'CANCELLED'
            WHEN attempts >= max_attempts THEN 'FAILED'
            ELSE 'PENDING' END,
        error = CASE
            WHEN cancel_requested THEN error
            ELSE 'attempt ' || attempts || ' was lost: ' || :why END,
        finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN now() END,
        available_at = now(), queued_at = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE id = ANY(ARRAY({candidates})) AND status = 'IN_PROGRESS' AND {guard}
    RETURNING id, status, attempts, trace_context
"""

_RECOVER_EXPIRED = sa.text(_RECOVER.format(
    candidates="""
        SELECT id FROM tasks WHERE status = 'IN_PROGRESS' AND lease_expires_at < now()
        ORDER BY lease_expires_at LIMIT :limit FOR UPDATE SKIP LOCKED""",
    guard="lease_expires_at < now()",
)).bindparams(why="its worker stopped renewing the lease")

_WORKER_GONE = (
    "worker_id = :worker AND (CAST(:before AS timestamptz) IS NULL OR started_at < :before)")

_RECOVER_WORKER = sa.text(_RECOVER.format(
    candidates=f"""
        SELECT id FROM tasks WHERE status = 'IN_PROGRESS' AND {_WORKER_GONE}
        FOR UPDATE SKIP LOCKED""",
    guard=_WORKER_GONE,
)).bindparams(why="its worker is gone")

_IN_PROGRESS = sa.text("SELECT count(*) FROM tasks WHERE status = 'IN_PROGRESS'")

_HEARTBEAT = sa.text(f"""
    UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS integer[])) AS held(id, attempt)
    WHERE {_in_id_order("CAST(:ids AS uuid[])")}
      AND tasks.id = held.id AND tasks.attempts = held.attempt
      AND tasks.status = 'IN_PROGRESS' AND tasks.worker_id = :worker
    RETURNING tasks.id, tasks.cancel_requested
""")
