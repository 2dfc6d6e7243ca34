"""The API's reads and writes: submit (with idempotency keys), read, list by cursor, cancel."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid_utils.compat import uuid7

from services.core.db.base import PUBLIC, RETURNING, StoreBase, task_of
from services.core.db.tables import tasks
from services.core.domain import (
    Attempt,
    AttemptLogs,
    Outgoing,
    Page,
    Status,
    Submission,
    Task,
    TaskFilter,
    in_range,
)
from services.core.errors import (
    AttemptNotFound,
    IdempotencyConflict,
    TaskAlreadyTerminal,
    TaskNotFound,
    TaskNotRerunnable,
)


class InvalidCursor(ValueError):
    """A cursor this service did not hand out."""


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
class Stored:
    """What create_many() did: each submission's outcome, in order, and the tasks it
    reserved for the caller to publish (their trace contexts, by id)."""

    outcomes: list[tuple[Task, bool] | IdempotencyConflict]
    reserved: Outgoing


class Submissions(StoreBase):
    """What REST clients do to their tasks, always within their tenant."""

    async def create_many(
        self, submissions: Sequence[Submission], *, reserve: bool = False
    ) -> Stored:
        """Store every submission in one statement, all or none, and answer each in order:
        (task, True) when stored; (earlier task, False) for a key its tenant used before
        (or earlier in `submissions`) with the same request hash; else IdempotencyConflict.

        With `reserve`, the stored tasks that are due now are marked as having a message
        (queued_at), as the relay's reserve_due() marks them: the caller publishes them
        itself right after the commit (Stored.reserved), then confirm_queued() or
        release(). A caller that dies first leaves them to the relay's resend_lost().
        """
        keyed = [(s.tenant, s.idempotency_key) for s in submissions if s.idempotency_key]
        rows, params = _insert_params(submissions, reserve)
        # Another client's statement can still make PostgreSQL abort this one (a deadlock):
        # it did nothing, and runs again.
        stored = {row.id: row for row in await self._write(_INSERT_MANY, params)}
        earlier = {}
        if len(stored) < len(rows):  # some keys were used before
            tenants, keys = [list(column) for column in zip(*keyed, strict=True)]
            async with self._begin() as connection:
                found = await connection.execute(_BY_KEYS, {"tenants": tenants, "keys": keys})
            earlier = {(row.tenant, row.idempotency_key): row for row in found}
        outcomes: list[tuple[Task, bool] | IdempotencyConflict] = []
        for row, submission in zip(rows, submissions, strict=True):
            key = submission.idempotency_key
            before = earlier.get((submission.tenant, key))
            if row["id"] in stored:
                outcomes.append((task_of(stored[row["id"]]), True))
            elif before is not None and before.request_hash == submission.request_hash:
                outcomes.append((task_of(before), False))
            else:
                outcomes.append(IdempotencyConflict(key or ""))
        reserved = {
            row.id: (row.queue, row.trace_context) for row in stored.values() if row.reserved
        }
        self._announce_created(outcomes, reserved)
        return Stored(outcomes, reserved)

    def _announce_created(
        self, outcomes: list[tuple[Task, bool] | IdempotencyConflict], reserved: Outgoing
    ) -> None:
        """New tasks, by status; the relay owes a message to those the caller does not send."""
        created = [outcome[0] for outcome in outcomes if isinstance(outcome, tuple) and outcome[1]]
        for status in {task.status for task in created}:
            these = [task for task in created if task.status is status]
            owed = any(task.id not in reserved for task in these)
            self.events.moved(status, len(these), owed=owed)

    async def get(self, task_id: uuid.UUID, tenant: str | None = None) -> Task:
        """The task `task_id`, or TaskNotFound; also when it belongs to another `tenant`."""
        async with self._begin() as connection:
            row = (await connection.execute(_by_id(task_id, tenant))).first()
        if row is None:
            raise TaskNotFound(task_id)
        return task_of(row)

    async def trace_context(
        self, task_id: uuid.UUID, tenant: str | None = None
    ) -> dict[str, str] | None:
        """The W3C trace context the task was submitted with; TaskNotFound as get()."""
        query = sa.select(tasks.c.trace_context).where(tasks.c.id == task_id)
        if tenant is not None:
            query = query.where(tasks.c.tenant == tenant)
        async with self._begin() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            raise TaskNotFound(task_id)
        context: dict[str, str] | None = row.trace_context
        return context

    async def attempts_of(self, task_id: uuid.UUID, tenant: str | None = None) -> list[Attempt]:
        """Every attempt of the task, oldest first, the running one last; TaskNotFound for
        an unknown task or one of another `tenant`."""
        await self.get(task_id, tenant)
        async with self._begin() as connection:
            rows = await connection.execute(_ATTEMPTS, {"id": task_id})
            return [Attempt(*row) for row in rows]

    async def attempt_logs(
        self, task_id: uuid.UUID, attempt: int, tenant: str | None = None
    ) -> AttemptLogs:
        """The lines the handler logged in `attempt` of the task (none yet, or none kept,
        is no lines); TaskNotFound as get(), AttemptNotFound for an attempt not started."""
        params = {"id": task_id, "attempt": attempt, "tenant": tenant}
        async with self._begin() as connection:
            row = (await connection.execute(_LOGS, params)).first()
        if row is None:
            raise TaskNotFound(task_id)
        if attempt > row.attempts:
            raise AttemptNotFound(task_id, attempt)
        lines = row.lines or []
        return AttemptLogs(attempt, lines, (row.logged or 0) - len(lines))

    async def page(self, where: TaskFilter, limit: int, cursor: str | None = None) -> Page:
        """Tasks matching `where`, newest first, `limit` at a time, from `cursor` on."""
        query = _select().where(*_conditions(where))
        if cursor is not None:
            created_at, task_id = decode_cursor(cursor)
            query = query.where(sa.tuple_(tasks.c.created_at, tasks.c.id) < (created_at, task_id))
        query = query.order_by(tasks.c.created_at.desc(), tasks.c.id.desc()).limit(limit + 1)
        async with self._begin() as connection:
            items = [task_of(row) for row in await connection.execute(query)]
        more = len(items) > limit
        items = items[:limit]
        return Page(items, encode_cursor(items[-1]) if more else None)

    async def rerun(self, task_id: uuid.UUID, tenant: str | None = None) -> Task:
        """Queue a FAILED or CANCELLED task again, with a fresh attempt budget; its id,
        attempts (the history goes on from them) and trace stay. TaskNotFound (also for a
        task of another `tenant`) or TaskNotRerunnable."""
        rerun = (
            sa.update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status.in_(("FAILED", "CANCELLED")))
            .values(**_RERUN_VALUES, updated_at=_NOW)
            .returning(*PUBLIC)
        )
        if tenant is not None:
            rerun = rerun.where(tasks.c.tenant == tenant)
        async with self._begin() as connection:
            row = (await connection.execute(rerun)).first()
            if row is not None:
                return self._run_again(task_of(row))
            row = (await connection.execute(_by_id(task_id, tenant))).first()
        if row is None:
            raise TaskNotFound(task_id)
        raise TaskNotRerunnable(task_id, row.status)

    def _run_again(self, task: Task) -> Task:
        self.events.moved(task.status, owed=True)
        return task

    async def cancel_matching(self, where: TaskFilter, batch: int = 1000) -> tuple[int, int]:
        """Cancel every task matching `where`: queued ones at once, running ones by asking
        their workers to stop; finished ones stay as they are. In batches of `batch`,
        each its own statement, so no lock is held long, and a repeat changes nothing.
        Answers (cancelled, cancel requested)."""
        cancelled = await self._in_batches(
            where, batch, ("NEW", "PENDING"), {"status": "CANCELLED", "finished_at": _NOW}
        )
        requested = await self._in_batches(
            where,
            batch,
            ("IN_PROGRESS",),
            {"cancel_requested": True},
            sa.not_(tasks.c.cancel_requested),
        )
        self.events.moved(Status.CANCELLED, cancelled)
        return cancelled, requested

    async def rerun_matching(self, where: TaskFilter, batch: int = 1000) -> int:
        """Queue again every FAILED or CANCELLED task matching `where`, as rerun() does,
        in batches; answers how many."""
        # Finished before the request: a task that fails again meanwhile is not taken twice.
        changed = await self._in_batches(
            where, batch, ("FAILED", "CANCELLED"), _RERUN_VALUES, since=tasks.c.updated_at
        )
        self.events.moved(Status.PENDING, changed, owed=True)
        return changed

    async def _in_batches(
        self,
        where: TaskFilter,
        batch: int,
        statuses: tuple[str, ...],
        values: dict[str, Any],
        *more: sa.ColumnElement[bool],
        since: sa.Column[Any] = tasks.c.created_at,
    ) -> int:
        """Apply `values` to the tasks in `statuses` matching `where`, `batch` at a time,
        each batch its own statement. Rows other statements hold (a heartbeat, a relay) are
        passed over, then waited for in a last round, so none is missed; only tasks whose
        `since` is before the first batch are taken, so the work ends. One status at a
        time (NEW before PENDING, which it may become), so an index walks it in order."""
        started = await self._now()
        wanted = [s for s in statuses if not where.statuses or s in where.statuses]
        total = 0
        for skip_locked in (True, False):
            for status in wanted:
                guard = [_is(status), since <= started, *more]
                total += await self._walk(_batch(where, batch, guard, values, skip_locked), batch)
        return total

    async def _walk(self, statement: sa.Select[Any], batch: int) -> int:
        """Run `statement` until it reads fewer than `batch` tasks, each time after the last
        task the previous one read: every task is read once, however many batches."""
        total, after = 0, _FIRST
        while True:
            async with self._begin() as connection:
                row = (await connection.execute(statement, after)).first()
            if row is None:
                return total
            total += int(row.changed)
            if row.read < batch:
                return total
            after = {"after_at": row.created_at, "after_id": row.id}

    async def _now(self) -> datetime:
        async with self._begin() as connection:
            moment: datetime = (await connection.execute(sa.select(sa.func.now()))).scalar_one()
            return moment

    def _cancelled(self, task: Task) -> Task:
        if task.status is Status.CANCELLED:
            self.events.moved(Status.CANCELLED)
        return task

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
                    return self._cancelled(task_of(row))
            row = (await connection.execute(_by_id(task_id, tenant))).first()
        if row is None:
            raise TaskNotFound(task_id)
        task = task_of(row)
        if task.status.is_terminal:
            raise TaskAlreadyTerminal(task_id, task.status)
        # It moved between the statements (queued to running); the caller may ask again.
        return await self.cancel(task_id, tenant)


# Where a bulk action's walk is (created_at, id); it starts before every task.
_AFTER_AT = sa.bindparam("after_at", type_=tasks.c.created_at.type)
_AFTER_ID = sa.bindparam("after_id", type_=tasks.c.id.type)
_FIRST = {"after_at": datetime(1, 1, 1, tzinfo=UTC), "after_id": uuid.UUID(int=0)}


def _batch(
    where: TaskFilter,
    batch: int,
    guard: list[sa.ColumnElement[bool]],
    values: dict[str, Any],
    skip_locked: bool,
) -> sa.Select[Any]:
    """One batch: the next `batch` tasks matching after (:after_at, :after_id), in
    (created_at, id) order (the listing indexes'); those of them still matching locked in id
    order (the order of locks), skipping held ones with `skip_locked`, and changed. Its one
    row: the last task read, how many were read and how many changed; none when none read."""
    position = sa.tuple_(tasks.c.created_at, tasks.c.id)
    read = (
        sa.select(tasks.c.created_at, tasks.c.id)
        .where(*_conditions(where), *guard, position > sa.tuple_(_AFTER_AT, _AFTER_ID))
        .order_by(tasks.c.created_at, tasks.c.id)
        .limit(batch)
        .cte("read")
    )
    locked = (
        sa.select(tasks.c.id)
        .where(tasks.c.id == _any(read.c.id), *guard)
        .order_by(tasks.c.id)
        .with_for_update(skip_locked=skip_locked)
        .cte("locked")
    )
    changed = (
        sa.update(tasks)
        .where(tasks.c.id == _any(locked.c.id), *guard)
        .values(**values, updated_at=_NOW)
        .returning(tasks.c.id)
        .cte("changed")
    )
    return (
        sa.select(
            read.c.created_at,
            read.c.id,
            sa.select(sa.func.count()).select_from(read).scalar_subquery().label("read"),
            sa.select(sa.func.count()).select_from(changed).scalar_subquery().label("changed"),
        )
        .order_by(read.c.created_at.desc(), read.c.id.desc())
        .limit(1)
    )


def _is(status: str) -> sa.ColumnElement[bool]:
    """The status written into the statement, so that PostgreSQL plans for how many tasks
    have it (a rare one from its index, a common one perhaps by the tenant's)."""
    return tasks.c.status == sa.bindparam("walked", status, literal_execute=True)


def _any(ids: sa.ColumnElement[Any]) -> Any:
    """ANY of the ids of a CTE, as one array: looked up in the primary key, whatever the
    planner guesses of the CTE's size."""
    ids_of = sa.select(sa.func.array_agg(ids)).scalar_subquery()
    return sa.any_(sa.cast(ids_of, ARRAY(tasks.c.id.type)))


def _select() -> sa.Select[Any]:
    return sa.select(*PUBLIC)


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
    if where.queue is not None:
        # Written into the statement (a checked name), so that PostgreSQL sees it is not
        # the default queue and reads the partial index of the others' tasks.
        conditions.append(tasks.c.queue == sa.bindparam("queue", where.queue, literal_execute=True))
    if where.created_after is not None:
        conditions.append(tasks.c.created_at > where.created_after)
    if where.created_before is not None:
        conditions.append(tasks.c.created_at < where.created_before)
    if where.title:
        text = re.sub(r"([\\%_])", r"\\\1", where.title)  # the text itself, not a pattern
        conditions.append(tasks.c.title.ilike(f"%{text}%", escape="\\"))
    return conditions


async def insert_tasks(
    connection: AsyncConnection, submissions: Sequence[Submission], *, reserve: bool = False
) -> tuple[list[dict[str, Any]], dict[uuid.UUID, Any]]:
    """Insert the submissions in one statement: the values made for each, in order, and
    the rows stored, by id (none for a key its tenant used before, or that comes twice)."""
    rows, params = _insert_params(submissions, reserve)
    return rows, {row.id: row for row in await connection.execute(_INSERT_MANY, params)}


def _insert_params(
    submissions: Sequence[Submission], reserve: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The values made for each submission, in order, and _INSERT_MANY's parameters: the
    rows sorted by (tenant, idempotency key), so that every insert takes the keys' locks in
    one order and two never wait for each other in a cycle. The sort is stable: of a key
    that comes twice, the first sent is the one stored."""
    rows = [_insert_values(submission) for submission in submissions]
    ordered = sorted(rows, key=_lock_order)
    params: dict[str, Any] = {name: [row[name] for row in ordered] for name in _ARRAYS}
    params["reserve"] = reserve
    return rows, params


def _lock_order(row: dict[str, Any]) -> tuple[bool, str, str]:
    key = row["idempotency_key"]
    return key is None, row["tenant"], key or ""


def _insert_values(submission: Submission) -> dict[str, Any]:
    new = submission.new
    return {
        # Time-ordered: a new task's key lands at the end of the primary key's index, not
        # on a random page of it (fewer pages dirtied, and fewer full pages in the WAL).
        "id": uuid7(),
        "tenant": submission.tenant,
        "title": new.title,
        "description": new.description,
        "priority": new.priority.rank,
        "kind": new.kind,
        "queue": new.queue,
        "payload": json.dumps(new.payload),
        "max_attempts": new.max_attempts,
        "timeout_seconds": new.timeout_seconds,
        "scheduled_at": new.scheduled_at,
        "idempotency_key": submission.idempotency_key,
        "request_hash": submission.request_hash,
        "trace_context": json.dumps(submission.trace_context) if submission.trace_context else None,
    }


# The columns sent as arrays, one element per task, with their PostgreSQL types.
_ARRAYS = {
    "id": "uuid",
    "tenant": "text",
    "title": "text",
    "description": "text",
    "priority": "smallint",
    "kind": "text",
    "queue": "text",
    "payload": "text",
    "max_attempts": "integer",
    "timeout_seconds": "double precision",
    "scheduled_at": "timestamptz",
    "idempotency_key": "text",
    "request_hash": "text",
    "trace_context": "text",
}

# One row per array element, in order; a key its tenant used before (or that comes twice)
# stores nothing for that element. A task scheduled for later waits as PENDING; the relay
# sends its message once it is due.
_INSERT_MANY = sa.text(f"""
    INSERT INTO tasks (id, tenant, title, description, priority, status, kind, queue, payload,
                       max_attempts, timeout_seconds, scheduled_at, available_at, queued_at,
                       idempotency_key, request_hash, trace_context)
    SELECT id, tenant, title, description, priority,
           CASE WHEN scheduled_at > now() THEN 'PENDING' ELSE 'NEW' END,
           kind, queue, CAST(payload AS jsonb), max_attempts, timeout_seconds, scheduled_at,
           greatest(now(), coalesce(scheduled_at, now())),
           CASE WHEN :reserve AND coalesce(scheduled_at, now()) <= now() THEN now() END,
           idempotency_key, request_hash, CAST(trace_context AS jsonb)
    FROM unnest({", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _ARRAYS.items())})
         AS batch({", ".join(_ARRAYS)})
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {RETURNING}, queued_at IS NOT NULL AS reserved, trace_context
""")

_BY_KEYS = sa.text(f"""
    SELECT {RETURNING}, tenant, idempotency_key, request_hash FROM tasks
    WHERE (tenant, idempotency_key) IN (
        SELECT * FROM unnest(CAST(:tenants AS text[]), CAST(:keys AS text[])))
""")

_ATTEMPTS = sa.text("""
    SELECT attempt, worker_id, started_at, finished_at, outcome, error, error_type, traceback
    FROM task_attempts WHERE task_id = :id
    UNION ALL
    SELECT attempts, worker_id, started_at, NULL, 'running', NULL, NULL, NULL
    FROM tasks WHERE id = :id AND status = 'IN_PROGRESS'
    ORDER BY attempt
""")

# A NULL :tenant matches every tenant: the unscoped form, for operators and tests.
_OF_TENANT = "(CAST(:tenant AS text) IS NULL OR tenant = :tenant)"

_LOGS = sa.text(f"""
    SELECT tasks.attempts, attempt_logs.lines, attempt_logs.logged
    FROM tasks LEFT JOIN attempt_logs
        ON attempt_logs.task_id = tasks.id AND attempt_logs.attempt = :attempt
    WHERE tasks.id = :id AND {_OF_TENANT}
""")

_NOW = sa.func.now()
# What a re-run sets: back in its queue, its budget counted from the attempts made so far,
# due at once, or at its scheduled time while that is still to come.
_RERUN_VALUES: dict[str, Any] = {
    "status": "PENDING",
    "attempts_before_rerun": tasks.c.attempts,
    "result": sa.null(),
    "error": None,
    "progress": sa.null(),
    "cancel_requested": False,
    "finished_at": None,
    "available_at": sa.func.greatest(_NOW, sa.func.coalesce(tasks.c.scheduled_at, _NOW)),
    "queued_at": None,
}

_CANCEL_QUEUED = sa.text(f"""
    UPDATE tasks SET status = 'CANCELLED', finished_at = now(), updated_at = now()
    WHERE id = :id AND status IN ('NEW', 'PENDING') AND {_OF_TENANT}
    RETURNING {RETURNING}
""")

_REQUEST_CANCEL = sa.text(f"""
    UPDATE tasks SET cancel_requested = true, updated_at = now()
    WHERE id = :id AND status = 'IN_PROGRESS' AND {_OF_TENANT}
    RETURNING {RETURNING}
""")
