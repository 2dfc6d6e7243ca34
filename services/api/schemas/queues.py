"""Queues: their limits and what they hold, and the overview of a tenant's activity."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field

from services.api.schemas.common import ITEMS, NAME, PAUSED
from services.core.domain import Priority, Status

_RUNNING = "Tasks running now"


class QueueOut(BaseModel):
    """A queue: its limits, whether it is paused, and what it holds now."""

    name: str = Field(description=NAME)
    paused: bool = Field(description=PAUSED)
    max_running: int | None = Field(description="Running tasks at most, across all workers")
    rate: float | None = Field(description="Starts a second at most, across all workers")
    queued: dict[Priority, int] = Field(
        description=f"{Status.NEW} and {Status.PENDING} tasks, by priority"
    )
    running: int = Field(description=_RUNNING)
    oldest_ready_seconds: float | None = Field(
        description="How long the longest-waiting due task has waited; null when none waits"
    )


class QueuePage(BaseModel):
    items: list[QueueOut] = Field(description=ITEMS)


class MinuteOut(BaseModel):
    at: AwareDatetime = Field(description="The minute's start")
    started: int = Field(description="Attempts that started in the minute")
    completed: int = Field(description="Tasks that completed in the minute")
    failed: int = Field(description="Tasks that failed for good in the minute")


class QueueActivityOut(BaseModel):
    """One queue, as the caller's tenant sees it."""

    name: str = Field(description=NAME)
    paused: bool = Field(description=PAUSED)
    ready: dict[Priority, int] = Field(
        description="Queued tasks that are due, by priority; each counted up to 10,000"
    )
    running: int = Field(description=_RUNNING)
    oldest_ready_seconds: float | None = Field(
        description="How long the longest-waiting ready task has waited; null for none"
    )
    minutes: list[MinuteOut] = Field(description="The last 15 minutes, oldest first")


class OverviewOut(BaseModel):
    queues: list[QueueActivityOut] = Field(description="Every queue of the installation")
    window_complete: bool = Field(
        description="false when more tasks finished in the 15 minutes than were read: the "
        "minutes then start later"
    )
