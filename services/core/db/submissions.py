"""The API's reads and writes: submit (with idempotency keys), read, list by cursor, cancel."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from services.core.auth import DEFAULT_TENANT
from services.core.db.base import PUBLIC, RETURNING, StoreBase, task_of
from services.core.db.tables import tasks
from services.core.domain import (
    NewTask,
    Page,
    Task,
    TaskFilter,
    in_range,
)
from services.core.errors import IdempotencyConflict, TaskAlreadyTerminal, TaskNotFound


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


class Submissions(StoreBase):
    """What REST clients do to their tasks, always within their tenant."""

    async def create(
        self,
        new: NewTask,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        trace_context: dict[str, str] | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> tuple[Task, bool]:
        """Store `new` for `tenant`; answer (task, True), or (earlier task, False) for a
        key this tenant used before."""
        values = _insert_values(new, idempotency_key, request_hash)
        values["trace_context"] = trace_context or None
        values["tenant"] = tenant
        async with self._begin() as connection:
            row = (await connection.execute(_INSERT, values)).first()
            if row is not None:
                return task_of(row), True
            params = {"key": idempotency_key, "tenant": tenant}
            found = (await connection.execute(_BY_KEY, params)).first()
        if found is None:  # the earlier task was deleted between the two statements
            raise IdempotencyConflict(idempotency_key or "")
        if found.request_hash != request_hash:
            raise IdempotencyConflict(idempotency_key or "")
        return task_of(found), False

    async def create_many(
        self,
        entries: Sequence[tuple[NewTask, str | None, str | None]],
        trace_context: dict[str, str] | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> list[tuple[Task, bool] | IdempotencyConflict]:
        """Store every (task, idempotency key, request hash) of `entries` in one statement,
        all or none; answer each in order: (task, True) when stored, (earlier task, False)
        for a key this tenant used before with the same request, else IdempotencyConflict."""
        rows = [_insert_values(new, key, digest) for new, key, digest in entries]
        columns = {name: [row[name] for row in rows] for name in _ARRAYS}
        columns["payload"] = [json.dumps(row["payload"]) for row in rows]
        params = {**columns, "tenant": tenant, "trace_context": trace_context or None}
        keys = [key for _, key, _ in entries if key is not None]
        async with self._begin() as connection:
            stored = {
                row.id: task_of(row) for row in await connection.execute(_INSERT_MANY, params)
            }
            earlier = {}
            if len(stored) < len(rows):  # some keys were used before
                found = await connection.execute(_BY_KEYS, {"keys": keys, "tenant": tenant})
                earlier = {row.idempotency_key: row for row in found}
        answers: list[tuple[Task, bool] | IdempotencyConflict] = []
        for row, (_, key, digest) in zip(rows, entries, strict=True):
            if row["id"] in stored:
                answers.append((stored[row["id"]], True))
            elif key in earlier and earlier[key].request_hash == digest:
                answers.append((task_of(earlier[key]), False))
            else:
                answers.append(IdempotencyConflict(key or ""))
        return answers

    async def get(self, task_id: uuid.UUID, tenant: str | None = None) -> Task:
        """The task `task_id`, or TaskNotFound; also when it belongs to another `tenant`."""
        async with self._begin() as connection:
            row = (await connection.execute(_by_id(task_id, tenant))).first()
        if row is None:
            raise TaskNotFound(task_id)
        return task_of(row)

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
                    return task_of(row)
            row = (await connection.execute(_by_id(task_id, tenant))).first()
        if row is None:
            raise TaskNotFound(task_id)
        task = task_of(row)
        if task.status.is_terminal:
            raise TaskAlreadyTerminal(task_id, task.status)
        # It moved between the statements (queued to running); the caller may ask again.
        return await self.cancel(task_id, tenant)


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
    RETURNING {RETURNING}
""").bindparams(
    _bind_json,
    sa.bindparam("scheduled_at", type_=sa.DateTime(timezone=True)),
    sa.bindparam("trace_context", type_=tasks.c.trace_context.type),
)

# The columns a batch sends as arrays, one element per task, with their PostgreSQL types.
_ARRAYS = {
    "id": "uuid",
    "title": "text",
    "description": "text",
    "priority": "smallint",
    "kind": "text",
    "payload": "text",
    "max_attempts": "integer",
    "timeout_seconds": "double precision",
    "scheduled_at": "timestamptz",
    "idempotency_key": "text",
    "request_hash": "text",
}

# One row per array element, in order; a key used before (or twice in the batch) stores
# nothing for that element, as in _INSERT.
_INSERT_MANY = sa.text(f"""
    INSERT INTO tasks (id, tenant, title, description, priority, status, kind, payload,
                       max_attempts, timeout_seconds, scheduled_at, available_at,
                       idempotency_key, request_hash, trace_context)
    SELECT id, :tenant, title, description, priority,
           CASE WHEN scheduled_at > now() THEN 'PENDING' ELSE 'NEW' END,
           kind, CAST(payload AS jsonb), max_attempts, timeout_seconds, scheduled_at,
           greatest(now(), coalesce(scheduled_at, now())),
           idempotency_key, request_hash, CAST(:trace_context AS jsonb)
    FROM unnest({", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _ARRAYS.items())})
         AS batch({", ".join(_ARRAYS)})
    ON CONFLICT (tenant, idempotency_key) DO NOTHING
    RETURNING {RETURNING}
""").bindparams(sa.bindparam("trace_context", type_=tasks.c.trace_context.type))

_BY_KEYS = sa.text(f"""
    SELECT {RETURNING}, idempotency_key, request_hash FROM tasks
    WHERE tenant = :tenant AND idempotency_key = ANY(CAST(:keys AS text[]))
""")

_BY_KEY = sa.text(f"""
    SELECT {RETURNING}, request_hash FROM tasks
    WHERE tenant = :tenant AND idempotency_key = :key
""")

# A NULL :tenant matches every tenant: the unscoped form, for operators and tests.
_OF_TENANT = "(CAST(:tenant AS text) IS NULL OR tenant = :tenant)"

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
