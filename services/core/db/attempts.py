"""A worker's writes on the tasks it holds, each fenced by the attempt number it claimed."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from services.core.db.base import StoreBase, in_id_order
from services.core.domain import (
    Heartbeat,
    Status,
)
from services.core.outputs import LogWindow, clean_text

logger = logging.getLogger(__name__)


class Attempts(StoreBase):
    """Results, failures, cancels, hand-backs and lease renewals of held attempts."""

    async def complete_many(
        self,
        results: Sequence[tuple[uuid.UUID, int, str]],
        progress: dict[uuid.UUID, dict[str, Any]] | None = None,
        logs: dict[uuid.UUID, LogWindow] | None = None,
    ) -> list[Status | None]:
        """Record the result of each (task, attempt, result as JSON text) in one statement;
        for each, the task's new status, or None when that attempt no longer holds the
        task. A task whose cancel was requested ends CANCELLED instead: terminal means
        terminal. `progress` is what handlers reported since the last heartbeat, and
        `logs` the lines they logged, kept as well.

        A value PostgreSQL refuses (the output boundary should leave none) costs only its
        own task: the batch is written again one task at a time, and a task whose result
        still cannot be stored fails for good, saying why."""
        reported, logged = progress or {}, logs or {}
        ids = [task_id for task_id, _, _ in results]
        params = {
            "ids": ids,
            "attempts": [attempt for _, attempt, _ in results],
            "results": [result for _, _, result in results],
            "progress": [_json_or_none(reported.get(task_id)) for task_id in ids],
            **_lines(ids, logged),
        }
        try:
            rows = await self._write(_COMPLETE_MANY, params)
        except DBAPIError as error:
            if not refused_value(error):
                raise
            if len(results) > 1:
                return [(await self.complete_many([one], reported, logged))[0] for one in results]
            return [await self._unstorable(*results[0], {**reported, **logged}, error)]
        done = {(row.id, row.attempts): Status(row.status) for row in rows}
        self.events.moved_each(done.values())
        return [done.get((task_id, attempt)) for task_id, attempt, _ in results]

    async def _unstorable(
        self,
        task_id: uuid.UUID,
        attempt: int,
        result: str,
        extras: dict[uuid.UUID, Any],
        error: DBAPIError,
    ) -> Status | None:
        """One task's result that PostgreSQL refused: without its progress and log lines
        (`extras`), if those were the trouble; else its attempt fails for good."""
        if task_id in extras:
            return (await self.complete_many([(task_id, attempt, result)]))[0]
        logger.error("result not stored: %s", error.orig, extra={"task_id": str(task_id)})
        reason = clean_text(f"the result could not be stored: {error.orig}", 2048)
        return await self.fail(task_id, attempt, reason, None)

    async def fail(
        self,
        task_id: uuid.UUID,
        attempt: int,
        error: str,
        retry_in: float | None,
        *,
        timed_out: bool = False,
        error_type: str | None = None,
        traceback: str | None = None,
        logs: LogWindow | None = None,
    ) -> Status | None:
        """Record that `attempt` failed (ran out of time, with `timed_out`); retry after
        `retry_in` seconds while attempts last. The attempt's history keeps the class of
        the error and its traceback, and `logs`, the lines its handler logged.

        `retry_in=None` fails the task for good. None when the attempt was fenced off.
        """
        params = {
            "id": task_id,
            "attempt": attempt,
            "error": error,
            "retry": retry_in is not None,
            "delay": retry_in or 0.0,
            "outcome": "timed_out" if timed_out else "failed",
            "error_type": error_type,
            "traceback": traceback,
            **_window(logs),
        }
        return await self._finish(_FAIL, params)

    async def mark_cancelled(
        self, task_id: uuid.UUID, attempt: int, *, logs: LogWindow | None = None
    ) -> Status | None:
        """Record that `attempt` stopped on a cancel request, with the lines it logged."""
        params = {"id": task_id, "attempt": attempt, **_window(logs)}
        return await self._finish(_CANCELLED, params)

    async def hand_back(
        self, task_id: uuid.UUID, attempt: int, after_seconds: float = 0.0
    ) -> Status | None:
        """Put a task its holder could not finish back in the queue, its attempt uncounted
        (and the lines it logged dropped: the number is the next run's), due again
        `after_seconds` from now."""
        params = {"id": task_id, "attempt": attempt, "after": after_seconds}
        return await self._finish(_HAND_BACK, params)

    async def _finish(self, statement: sa.TextClause, params: dict[str, Any]) -> Status | None:
        async with self._begin() as connection:
            status = (await connection.execute(statement, params)).scalar()
        if status is None:
            return None
        self.events.moved(Status(status))
        return Status(status)

    async def heartbeat(
        self,
        worker_id: str,
        held: Sequence[tuple[uuid.UUID, int]],
        lease_seconds: float,
        progress: dict[uuid.UUID, dict[str, Any]] | None = None,
        logs: dict[uuid.UUID, LogWindow] | None = None,
    ) -> Heartbeat:
        """Renew the leases of every task in `held` in one statement, and store the
        `progress` their handlers reported since the last beat, and the `logs` their
        handlers logged so far.

        Answers which of them this worker still holds, and which have a cancel requested.
        """
        if not held:
            return Heartbeat(frozenset(), frozenset())
        reported = progress or {}
        ids = [task_id for task_id, _ in held]
        params = {
            "worker": worker_id,
            "lease": lease_seconds,
            "ids": ids,
            "attempts": [attempt for _, attempt in held],
            "progress": [_json_or_none(reported.get(task_id)) for task_id in ids],
            **_lines(ids, logs or {}),
        }
        try:
            rows = await self._write(_HEARTBEAT, params)
        except DBAPIError as error:
            if not (reported or logs) or not refused_value(error):
                raise
            # A value PostgreSQL refused must not cost every held task its lease: renew
            # them all without progress and lines (the lines go again with the attempt's
            # end), then keep each progress that fits.
            logger.error("progress refused, leases renewed without it: %s", error.orig)
            unreported = {"progress": [None] * len(held), **_lines(ids, {})}
            rows = await self._write(_HEARTBEAT, {**params, **unreported})
            await self._progress_each(worker_id, held, reported)
        return Heartbeat(
            frozenset(row.id for row in rows),
            frozenset(row.id for row in rows if row.cancel_requested),
        )

    async def _progress_each(
        self,
        worker_id: str,
        held: Sequence[tuple[uuid.UUID, int]],
        progress: dict[uuid.UUID, dict[str, Any]],
    ) -> None:
        for task_id, attempt in held:
            if task_id not in progress:
                continue
            params = {"worker": worker_id, "id": task_id, "attempt": attempt}
            try:
                await self._write(_PROGRESS, {**params, "progress": json.dumps(progress[task_id])})
            except DBAPIError as error:
                if not refused_value(error):
                    raise
                logger.error("progress refused: %s", error.orig, extra={"task_id": str(task_id)})


# SQLSTATE classes that say a value cannot be kept (22: data exception, such as bad JSON
# text; 54: a program limit, such as a value too large), whatever the moment. Any other
# error (a timeout, a failover, a deadlock) says nothing of the value: it is raised, and
# the write is tried again, so that a good result is never failed for it.
_VALUE_REFUSED = ("22", "54")


def refused_value(error: DBAPIError) -> bool:
    """True when PostgreSQL refused a value of the statement, not the moment."""
    return str(getattr(error.orig, "sqlstate", "") or "").startswith(_VALUE_REFUSED)


def _json_or_none(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)


def _window(logs: LogWindow | None) -> dict[str, Any]:
    """The parameters of one attempt's log lines (none: NULL, its row left as it is)."""
    if logs is None:
        return {"lines": None, "logged": None}
    return {"lines": logs.lines, "logged": logs.logged}


def _lines(ids: Sequence[uuid.UUID], logs: dict[uuid.UUID, LogWindow]) -> dict[str, Any]:
    """The parameters of the log lines of the tasks `ids`, in their order."""
    return {
        "lines": [logs[i].lines if i in logs else None for i in ids],
        "logged": [logs[i].logged if i in logs else None for i in ids],
    }


# Attempts left in the task's budget (counted since it was last run again).
_LEFT = "attempts - attempts_before_rerun < max_attempts"

_FENCE = "WHERE id = :id AND status = 'IN_PROGRESS' AND attempts = :attempt"

# One attempt's log lines, as _keep_lines takes them.
_LINES = "CAST(:lines AS jsonb) AS lines, CAST(:logged AS integer) AS logged"

# The attempt as it ended, from the row of its task (a CTE named `ended`).
_KEEP = """
    kept AS (
        INSERT INTO task_attempts (
            task_id, attempt, worker_id, started_at, finished_at, outcome, error, error_type,
            traceback)
        SELECT id, attempts, worker_id, started_at, coalesce(finished_at, now()), outcome, error,
            error_type, traceback
        FROM ended
    )"""


def _keep_lines(fenced: str) -> str:
    """The lines each attempt's handler logged, as its worker holds them (the last ones, a
    JSON array), from the rows the statement fenced (the CTE `fenced`, with id, attempts,
    lines and logged): they replace what an earlier beat stored; NULL leaves it."""
    return f"""
    lines_kept AS (
        INSERT INTO attempt_logs (task_id, attempt, lines, logged)
        SELECT id, attempts, lines, logged FROM {fenced} WHERE lines IS NOT NULL
        ON CONFLICT (task_id, attempt) DO UPDATE
        SET lines = excluded.lines, logged = excluded.logged
    )"""


_COMPLETE_MANY = sa.text(f"""
    WITH ended AS (
        UPDATE tasks SET
            status = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'COMPLETED' END,
            result = CASE WHEN cancel_requested THEN NULL ELSE done.result END,
            progress = coalesce(done.progress, tasks.progress),
            finished_at = now(), updated_at = now(), lease_expires_at = NULL
        FROM unnest(
            CAST(:ids AS uuid[]), CAST(:attempts AS integer[]), CAST(:results AS jsonb[]),
            CAST(:progress AS jsonb[]), CAST(:lines AS jsonb[]), CAST(:logged AS integer[])
        ) AS done(id, attempt, result, progress, lines, logged)
        WHERE {in_id_order("CAST(:ids AS uuid[])")}
          AND tasks.id = done.id AND tasks.status = 'IN_PROGRESS'
          AND tasks.attempts = done.attempt
        RETURNING tasks.id, tasks.attempts, tasks.status, tasks.worker_id, tasks.started_at,
            tasks.finished_at, NULL AS error, NULL AS error_type, NULL AS traceback,
            CASE WHEN tasks.status = 'CANCELLED' THEN 'cancelled' ELSE 'completed' END AS outcome,
            done.lines, done.logged
    ), {_KEEP}, {_keep_lines("ended")}
    SELECT id, attempts, status FROM ended
""")

_FAIL = sa.text(f"""
    WITH ended AS (
        UPDATE tasks SET
            status = CASE
                WHEN cancel_requested THEN 'CANCELLED'
                WHEN :retry AND {_LEFT} THEN 'PENDING'
                ELSE 'FAILED' END,
            error = :error,
            available_at = now() + make_interval(secs => :delay),
            queued_at = NULL,
            finished_at = CASE
                WHEN :retry AND {_LEFT} AND NOT cancel_requested THEN NULL
                ELSE now() END,
            updated_at = now(), lease_expires_at = NULL
        {_FENCE}
        RETURNING id, attempts, status, worker_id, started_at, finished_at, error,
            CAST(:outcome AS text) AS outcome, CAST(:error_type AS text) AS error_type,
            CAST(:traceback AS text) AS traceback, {_LINES}
    ), {_KEEP}, {_keep_lines("ended")}
    SELECT status FROM ended
""")

_CANCELLED = sa.text(f"""
    WITH ended AS (
        UPDATE tasks SET status = 'CANCELLED', finished_at = now(), updated_at = now(),
            lease_expires_at = NULL
        {_FENCE}
        RETURNING id, attempts, status, worker_id, started_at, finished_at, NULL AS error,
            'cancelled' AS outcome, NULL AS error_type, NULL AS traceback, {_LINES}
    ), {_KEEP}, {_keep_lines("ended")}
    SELECT status FROM ended
""")

# The holder stops cleanly and writes this itself, so the attempt number can be given
# back without a stale holder ever sharing it; so are the lines it logged.
_HAND_BACK = sa.text(f"""
    WITH back AS (
        UPDATE tasks SET
            status = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'PENDING' END,
            finished_at = CASE WHEN cancel_requested THEN now() END,
            attempts = attempts - 1, available_at = now() + make_interval(secs => :after),
            queued_at = NULL,
            updated_at = now(), lease_expires_at = NULL
        {_FENCE}
        RETURNING status
    ), unlogged AS (
        DELETE FROM attempt_logs
        WHERE task_id = :id AND attempt = :attempt AND EXISTS (SELECT FROM back)
    )
    SELECT status FROM back
""")

_HEARTBEAT = sa.text(f"""
    WITH renewed AS (
        UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease),
            progress = coalesce(held.progress, tasks.progress)
        FROM unnest(
            CAST(:ids AS uuid[]), CAST(:attempts AS integer[]), CAST(:progress AS jsonb[]),
            CAST(:lines AS jsonb[]), CAST(:logged AS integer[])
        ) AS held(id, attempt, progress, lines, logged)
        WHERE {in_id_order("CAST(:ids AS uuid[])")}
          AND tasks.id = held.id AND tasks.attempts = held.attempt
          AND tasks.status = 'IN_PROGRESS' AND tasks.worker_id = :worker
        RETURNING tasks.id, tasks.attempts, tasks.cancel_requested, held.lines, held.logged
    ), {_keep_lines("renewed")}
    SELECT id, cancel_requested FROM renewed
""")

_PROGRESS = sa.text("""
    UPDATE tasks SET progress = CAST(:progress AS jsonb)
    WHERE id = :id AND attempts = :attempt AND status = 'IN_PROGRESS' AND worker_id = :worker
    RETURNING id
""")
