"""Schedules: a cron expression in a time zone, and the task each due time makes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from services.api.schemas.common import (
    CREATED,
    ITEMS,
    NAME,
    NEXT_CURSOR,
    PAUSED,
    UPDATED,
    Body,
    of_task,
)
from services.api.schemas.tasks import TaskTemplate
from services.core import cron
from services.core.domain import Missed, NewTask, Priority, Schedule, either

SCHEDULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
CRON = (
    "A cron expression of five fields (minute hour day-of-month month day-of-week), or six "
    "with the seconds first; L, # and names such as MON and JAN are understood. "
    "Examples: `0 9 * * MON-FRI` (9:00 on weekdays), `*/10 * * * * *` (every 10 seconds)"
)
_ZONE = "The IANA time zone the expression is read in"
_TASK = "The task each due time makes"


def _cron(expression: str) -> str:
    try:
        cron.check(expression, "UTC")
    except cron.BadSchedule as error:
        raise ValueError(str(error)) from None
    return expression


def _zone(name: str) -> str:
    try:
        cron.zone(name)
    except cron.BadSchedule as error:
        raise ValueError(str(error)) from None
    return name


class ScheduleCreate(Body):
    """A schedule: at each due time of `cron` in `timezone`, one task made from `task`."""

    name: str = Field(
        pattern=SCHEDULE_NAME, description="Unique within the tenant: letters, digits, _.:-"
    )
    cron: Annotated[str, AfterValidator(_cron)] = Field(
        min_length=9, max_length=200, pattern=r"^\S+( +\S+){4,5}$", description=CRON
    )
    timezone: Annotated[str, AfterValidator(_zone)] = Field(
        "UTC",
        max_length=64,
        description=f"{_ZONE} (Europe/Berlin); "
        "a due time that a daylight-saving change skips runs once, right after the change",
    )
    missed: Missed = Field(
        Missed.SKIP,
        description="Due times passed while no scheduler ran, by more than the grace "
        "(CONVEYOR_SCHEDULE_GRACE_SECONDS, 60 by default): skip drops them; run_once makes "
        "one task for the latest of them, unless a due time within the grace runs then",
    )
    paused: bool = Field(False, strict=True, description="Made paused: no task until it is resumed")
    task: TaskTemplate = Field(description=_TASK)


class ScheduledTask(BaseModel):
    """The task each due time of a schedule makes."""

    title: str = Field(description=of_task("title"))
    description: str = Field(description=of_task("description"))
    priority: Priority = Field(description=of_task("priority"))
    kind: str = Field(description=of_task("kind"))
    payload: dict[str, Any] = Field(description=of_task("payload"))
    max_attempts: int = Field(description=of_task("max_attempts"))
    timeout_seconds: float | None = Field(description=of_task("timeout_seconds"))
    queue: str = Field(description=of_task("queue"))

    @classmethod
    def of(cls, task: NewTask) -> ScheduledTask:
        return cls(**{name: getattr(task, name) for name in ScheduledTask.model_fields})


class ScheduleOut(BaseModel):
    """A schedule, and when it runs next."""

    id: uuid.UUID = Field(description="The schedule's id")
    name: str = Field(description=NAME)
    cron: str = Field(description="The cron expression")
    timezone: str = Field(description=_ZONE)
    missed: Missed = Field(
        description=f"What happens to due times missed while no scheduler ran: {either(Missed)}"
    )
    paused: bool = Field(description=PAUSED)
    task: ScheduledTask = Field(description=_TASK)
    next_run_at: AwareDatetime | None = Field(description="null while paused")
    next_runs: list[AwareDatetime] = Field(
        description="The next due times (up to 5), with the schedule's time zone's offset; "
        "none while paused"
    )
    last_run_at: AwareDatetime | None = Field(description="The latest due time that made a task")
    last_task_id: uuid.UUID | None = Field(description="The task it made")
    created_at: AwareDatetime = Field(description=CREATED)
    updated_at: AwareDatetime = Field(description=UPDATED)

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleOut:
        return cls(
            id=schedule.id,
            name=schedule.name,
            cron=schedule.cron,
            timezone=schedule.timezone,
            missed=schedule.missed,
            paused=schedule.paused,
            task=ScheduledTask.of(schedule.task),
            next_run_at=schedule.next_run_at,
            next_runs=_upcoming(schedule),
            last_run_at=schedule.last_run_at,
            last_task_id=schedule.last_task_id,
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
        )


def _upcoming(schedule: Schedule) -> list[datetime]:
    """The schedule's next five due times, in its time zone; none while paused."""
    if schedule.next_run_at is None:
        return []
    first = schedule.next_run_at - timedelta(microseconds=1)
    try:
        zone = cron.zone(schedule.timezone)
        times = cron.due_after(schedule.cron, schedule.timezone, first, 5)
    except cron.BadSchedule:  # its zone left the zone data: the scheduler pauses it
        return []
    return [moment.astimezone(zone) for moment in times]


class SchedulePage(BaseModel):
    items: list[ScheduleOut] = Field(description=ITEMS)
    next_cursor: str | None = Field(description=NEXT_CURSOR)
