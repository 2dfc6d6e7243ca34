"""What every part of the task store shares: its connections, a write that survives a lock
conflict, and the columns a task is read from."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from contextlib import AbstractAsyncContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.core.db.engine import connect
from services.core.db.tables import tasks
from services.core.domain import Priority, Status, Task
from services.core.events import Events

logger = logging.getLogger(__name__)

# Deadlock detected, serialization failure: the statement did nothing and may run again.
_CONFLICTS = frozenset({"40P01", "40001"})
_CONFLICT_RETRIES = 5

# The columns a Task is read from: its fields, declared once in the domain.
PUBLIC = [tasks.c[task_field.name] for task_field in dataclasses.fields(Task)]
RETURNING = ", ".join(column.name for column in PUBLIC)


_NAMES = [column.name for column in PUBLIC]
_PRIORITY, _STATUS = _NAMES.index("priority"), _NAMES.index("status")


def task_of(row: Any) -> Task:
    """The Task a row starts with: every statement reads PUBLIC's columns first, in order."""
    values = list(row[: len(_NAMES)])
    values[_PRIORITY] = Priority.from_rank(values[_PRIORITY])
    values[_STATUS] = Status(values[_STATUS])
    return Task(*values)


def _is_conflict(error: DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) in _CONFLICTS


# Statements that change many given rows lock them first, in id order: two of them
# (a worker's results and its lease renewal, say) then never wait on each other in a cycle.
def in_id_order(ids: str) -> str:
    return (
        f"tasks.id = ANY(ARRAY(SELECT id FROM tasks WHERE id = ANY({ids}) ORDER BY id FOR UPDATE))"
    )


class StoreBase:
    """A connection to PostgreSQL for each statement. Raises StoreUnavailable when the
    server cannot be reached. Every change of status it makes is announced on `events`."""

    def __init__(
        self, engine: AsyncEngine, tenant_cap: int = 0, events: Events | None = None
    ) -> None:
        self._engine = engine
        self.events = events or Events()
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
                    return list((await connection.execute(statement, params)).all())
            except DBAPIError as error:
                if not _is_conflict(error) or attempt == _CONFLICT_RETRIES:
                    raise
                logger.warning(
                    "statement aborted by a lock conflict; running it again: %s", error.orig
                )
                await asyncio.sleep(random.uniform(0, 0.01 * attempt))
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        """Raise StoreUnavailable unless PostgreSQL answers."""
        async with self._begin() as connection:
            await connection.execute(sa.text("SELECT 1"))
