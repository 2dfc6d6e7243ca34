"""Schedules: what clients keep (create, read, pause, delete), and the firing of due ones.

A due schedule is fired by whichever scheduler locks its row first (the others pass it
by): its tasks are inserted and its next due time stored in one transaction, each task
with an idempotency key naming the schedule and the due time, so a due time makes one
task however many schedulers run and whenever one of them dies.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid_utils.compat import uuid7

from services.core import cron
from services.core.db.base import StoreBase
from services.core.db.submissions import insert_tasks
from services.core.db.tables import schedules
from services.core.domain import Missed, NewTask, Priority, Schedule, Status, Submission
from services.core.errors import ScheduleNameTaken, ScheduleNotFound, TooManySchedules

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fired:
    """What one firing pass did."""

    schedules: int  # schedules that were due
    tasks: int  # tasks created
    missed: int  # due times dropped, missed while no scheduler ran


class Schedules(StoreBase):
    """Schedules, always within their tenant, and the schedulers' firing pass."""

    async def create_schedule(
        self,
        tenant: str,
        name: str,
        expression: str,
        timezone: str,
        task: NewTask,
        *,
        missed: Missed = Missed.SKIP,
        paused: bool = False,
        limit: int | None = None,
    ) -> Schedule:
        """A new schedule, due first at its first due time from now (unless `paused`).
        ScheduleNameTaken when the tenant has one of that name; TooManySchedules when it
        has `limit` already (counted and stored as one step, under the tenant's lock)."""
        async with self._begin(transaction=True) as connection:
            now = await _now(connection)
            if limit is not None:
                await connection.execute(_LOCK_TENANT, {"tenant": tenant})
                count = await connection.scalar(
                    sa.select(sa.func.count())
                    .select_from(schedules)
                    .where(schedules.c.tenant == tenant)
                )
                if (count or 0) >= limit:
                    raise TooManySchedules(tenant, limit)
            values = {
                "id": uuid7(),
                "tenant": tenant,
                "name": name,
                "cron": expression,
                "timezone": timezone,
                "missed": missed.value,
                "paused": paused,
                "task": _task_json(task),
                "next_run_at": None if paused else _first_after(expression, timezone, now),
                "created_at": now,
                "updated_at": now,
            }
            statement = (
                insert(schedules)
                .values(values)
                .on_conflict_do_nothing(index_elements=["tenant", "name"])
                .returning(*schedules.c)
            )
            row = (await connection.execute(statement)).first()
        if row is None:
            raise ScheduleNameTaken(name)
        return _schedule_of(row)

    async def schedule(self, schedule_id: uuid.UUID, tenant: str | None = None) -> Schedule:
        """The schedule `schedule_id`; ScheduleNotFound, also for another tenant's."""
        async with self._begin() as connection:
            row = (await connection.execute(_by_id(schedule_id, tenant))).first()
        if row is None:
            raise ScheduleNotFound(schedule_id)
        return _schedule_of(row)

    async def schedules_of(
        self, tenant: str | None, limit: int, after: str | None = None
    ) -> list[Schedule]:
        """Up to `limit` schedules of `tenant` (None: every tenant's), by name, from the
        first named after `after` on."""
        query = sa.select(schedules).order_by(schedules.c.name, schedules.c.id).limit(limit)
        if tenant is not None:
            query = query.where(schedules.c.tenant == tenant)
        if after is not None:
            query = query.where(schedules.c.name > after)
        async with self._begin() as connection:
            return [_schedule_of(row) for row in await connection.execute(query)]

    async def set_schedule_paused(
        self, schedule_id: uuid.UUID, paused: bool, tenant: str | None = None
    ) -> Schedule:
        """Pause a schedule, or resume it from its first due time from now on (times
        passed while it was paused make no task). Again is harmless."""
        async with self._begin(transaction=True) as connection:
            row = (await connection.execute(_by_id(schedule_id, tenant).with_for_update())).first()
            if row is None:
                raise ScheduleNotFound(schedule_id)
            if row.paused == paused:
                return _schedule_of(row)
            now = await _now(connection)
            next_run_at = None if paused else _first_after(row.cron, row.timezone, now)
            statement = (
                schedules.update()
                .where(schedules.c.id == schedule_id)
                .values(paused=paused, next_run_at=next_run_at, updated_at=now)
                .returning(*schedules.c)
            )
            return _schedule_of((await connection.execute(statement)).one())

    async def delete_schedule(self, schedule_id: uuid.UUID, tenant: str | None = None) -> None:
        """Delete a schedule (the tasks it made stay); ScheduleNotFound, also for another
        tenant's."""
        statement = schedules.delete().where(schedules.c.id == schedule_id)
        if tenant is not None:
            statement = statement.where(schedules.c.tenant == tenant)
        async with self._begin() as connection:
            if not (await connection.execute(statement)).rowcount:
                raise ScheduleNotFound(schedule_id)

    async def next_schedule_at(self) -> datetime | None:
        """When the soonest schedule is due (read from ix_schedules_due); None for none."""
        query = sa.select(sa.func.min(schedules.c.next_run_at))
        async with self._begin() as connection:
            moment: datetime | None = await connection.scalar(query)
            return moment

    async def fire_due(self, grace: timedelta, batch: int = 100, most_runs: int = 100) -> Fired:
        """Fire up to `batch` due schedules that no other scheduler holds: one task for each
        due time at most `grace` old (up to `most_runs` a schedule; the rest next pass),
        the schedule's missed-time policy for older ones, and the next due time stored."""
        async with self._begin(transaction=True) as connection:
            now = await _now(connection)
            due = list(await connection.execute(_due(now, batch)))
            plans = [(row, _plan(row, now, grace, most_runs)) for row in due]
            submissions = [
                (row.id, due_at, _submission(row, due_at))
                for row, plan in plans
                if plan is not None
                for due_at in plan.fire
            ]
            made, stored = (
                await insert_tasks(connection, [s for *_, s in submissions])
                if submissions
                else ([], {})
            )
            last_task = {
                schedule_id: values["id"]
                for (schedule_id, _, _), values in zip(submissions, made, strict=True)
                if values["id"] in stored
            }
            for row, plan in plans:
                await connection.execute(_after_pass(row, plan, last_task.get(row.id), now))
        missed = sum(plan.missed for _, plan in plans if plan is not None)
        self.events.moved(Status.NEW, len(stored), owed=True)
        return Fired(len(due), len(stored), missed)


def _plan(row: Any, now: datetime, grace: timedelta, most: int) -> cron.Plan | None:
    """The pass's plan for a due schedule; None when its expression or zone cannot be
    read any more (a time zone gone from the zone data): it is paused, and said so."""
    try:
        return cron.plan(
            row.cron,
            row.timezone,
            row.next_run_at,
            now,
            missed=Missed(row.missed),
            grace=grace,
            most=most,
        )
    except cron.BadSchedule as error:
        logger.error("schedule %s (%s) paused: %s", row.id, row.name, error)
        return None


def _after_pass(
    row: Any, plan: cron.Plan | None, task_id: uuid.UUID | None, now: datetime
) -> sa.Update:
    values: dict[str, Any] = {"updated_at": now}
    if plan is None:
        values.update(paused=True, next_run_at=None)
    else:
        values["next_run_at"] = plan.next_run_at
        if plan.fire:
            values["last_run_at"] = plan.fire[-1]
        if task_id is not None:
            values["last_task_id"] = task_id
    return schedules.update().where(schedules.c.id == row.id).values(values)


def _submission(row: Any, due_at: datetime) -> Submission:
    """The task of `row`'s due time `due_at`: its idempotency key names both, so it is
    made once; its scheduled_at is the due time it is for."""
    new = dataclasses.replace(_task_of(row.task), scheduled_at=due_at)
    key = f"schedule:{row.id}:{due_at:%Y-%m-%dT%H:%M:%S.%fZ}"
    return Submission(new, row.tenant, key)


def _first_after(expression: str, timezone: str, moment: datetime) -> datetime:
    return cron.due_after(expression, timezone, moment, 1)[0]


async def _now(connection: AsyncConnection) -> datetime:
    moment: datetime = (await connection.execute(sa.select(sa.func.now()))).scalar_one()
    return moment


def _task_json(task: NewTask) -> dict[str, Any]:
    fields = dataclasses.asdict(task)
    del fields["scheduled_at"]  # each due time's own
    fields["priority"] = task.priority.value
    return fields


def _task_of(stored: dict[str, Any]) -> NewTask:
    return NewTask(**{**stored, "priority": Priority(stored["priority"])})


def _schedule_of(row: Any) -> Schedule:
    return Schedule(
        id=row.id,
        tenant=row.tenant,
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        missed=Missed(row.missed),
        paused=row.paused,
        task=_task_of(row.task),
        next_run_at=row.next_run_at,
        last_run_at=row.last_run_at,
        last_task_id=row.last_task_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _by_id(schedule_id: uuid.UUID, tenant: str | None) -> sa.Select[Any]:
    query = sa.select(schedules).where(schedules.c.id == schedule_id)
    return query if tenant is None else query.where(schedules.c.tenant == tenant)


# Creations of one tenant's schedules, one at a time: the count and the insert are one step.
_LOCK_TENANT = sa.text("SELECT pg_advisory_xact_lock(hashtext('conveyor.schedules.' || :tenant))")


def _due(now: datetime, limit: int) -> sa.Select[Any]:
    """Due schedules, soonest first; those another scheduler holds are passed by."""
    return (
        sa.select(schedules)
        .where(schedules.c.next_run_at <= now)
        .order_by(schedules.c.next_run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
