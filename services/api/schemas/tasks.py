"""Tasks: what a submit sends, a task's short form, pages, bulk selections, attempts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.api.schemas.common import (
    ITEMS,
    NEXT_CURSOR,
    OUTCOME,
    TIMES,
    Body,
    Instant,
    Text,
    of_task,
)
from services.api.schemas.payloads import PAYLOAD_LIMIT, Payload
from services.core.domain import QUEUE_NAME, NewTask, Priority, Status, Task, TaskFilter


class TaskTemplate(Body):
    """A task's body without its start time: what a schedule makes at each due time."""

    title: Text = Field(min_length=1, max_length=200, description=of_task("title"))
    description: Text = Field("", max_length=10_000, description=of_task("description"))
    priority: Priority = Field(Priority.MEDIUM, description=of_task("priority"))
    kind: str = Field("demo", min_length=1, max_length=100, description=of_task("kind"))
    payload: Payload = Field(
        default_factory=dict,
        description=f"A JSON object of at most {PAYLOAD_LIMIT} bytes as compact UTF-8 JSON",
    )
    # Strict numbers and booleans: "3" is no number and 0 no boolean, as the schema says.
    max_attempts: int = Field(3, ge=1, le=20, strict=True, description=of_task("max_attempts"))
    timeout_seconds: float | None = Field(
        None,
        strict=True,
        ge=0.1,
        le=7 * 86_400,
        description="Seconds each attempt may run: from 0.1 to 604800 (7 days)",
    )
    queue: str | None = Field(
        None,
        pattern=QUEUE_NAME,
        description="One of the installation's queues; default: its kind's queue, else default",
    )

    def to_new_task(self, queue: str) -> NewTask:
        """The task to store, on `queue` (this body's, its kind's or the default one)."""
        fields = {name: getattr(self, name) for name in TaskTemplate.model_fields}
        return NewTask(**{**fields, "queue": queue})


class TaskCreate(TaskTemplate):
    scheduled_at: Instant | None = Field(
        None, description=f"Do not start before this time: {TIMES}"
    )

    def to_new_task(self, queue: str) -> NewTask:
        return dataclasses.replace(super().to_new_task(queue), scheduled_at=self.scheduled_at)

    def request_hash(self) -> str:
        """The same for equal task bodies however they were written: what a repeated
        idempotency key must match."""
        fields = self.model_dump(mode="json", include=set(TaskCreate.model_fields))
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class TaskStatusOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description=of_task("id"))
    status: Status = Field(description=of_task("status"))
    attempts: int = Field(description=of_task("attempts"))
    updated_at: AwareDatetime = Field(description=of_task("updated_at"))
    cancel_requested: bool = Field(description=of_task("cancel_requested"))


class TaskPage(BaseModel):
    items: list[Task] = Field(description=ITEMS)
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class TaskSelection(Body):
    """Which of the caller's tasks a bulk action takes: the listing's filters, all of
    which must hold; none selects every task."""

    status: list[Status] | None = Field(
        None, max_length=len(Status), description="Any of these statuses"
    )
    priority: list[Priority] | None = Field(
        None, max_length=len(Priority), description="Any of these priorities"
    )
    kind: Text | None = Field(None, min_length=1, max_length=100, description="This kind only")
    queue: str | None = Field(None, pattern=QUEUE_NAME, description="This queue only")
    created_after: Instant | None = Field(None, description=f"Created after: {TIMES}")
    created_before: Instant | None = Field(None, description=f"Created before: {TIMES}")
    title: Text | None = Field(
        None, min_length=1, max_length=200, description="Text the title holds, in any case"
    )

    def to_filter(self, tenant: str) -> TaskFilter:
        return TaskFilter(
            frozenset(self.status or ()),
            frozenset(self.priority or ()),
            self.kind,
            self.queue,
            self.created_after,
            self.created_before,
            tenant,
            self.title,
        )


class BulkOut(BaseModel):
    """What a bulk action changed."""

    changed: int = Field(description="Tasks cancelled, or queued to run again")
    cancel_requested: int = Field(
        0, description="Running tasks whose workers were asked to stop (cancel only)"
    )


class AttemptOut(BaseModel):
    """One attempt of a task."""

    attempt: int = Field(description="The attempt's number, from 1")
    worker_id: str | None = Field(description="The worker that ran it: its pod's name")
    started_at: AwareDatetime = Field(description=of_task("started_at"))
    finished_at: AwareDatetime | None = Field(description=of_task("finished_at"))
    outcome: Literal["completed", "failed", "timed_out", "cancelled", "lost", "running"] = Field(
        description=OUTCOME
    )
    error: str | None = Field(description=of_task("error"))
    error_type: str | None = Field(
        description="The class of the exception that failed it, as its traceback names it "
        "(TimeoutError when it ran out of time); null when there was none"
    )
    traceback: str | None = Field(
        description="The traceback of that exception (of a time-out: where the handler "
        "was), its last ERROR_MAX_BYTES kept; null when there was none"
    )
    duration_seconds: float | None = Field(description="null while it runs")


class AttemptPage(BaseModel):
    items: list[AttemptOut] = Field(description=ITEMS)


class LogLineOut(BaseModel):
    """One line a handler logged through its context's logger."""

    logged_at: AwareDatetime = Field(description="When it was logged")
    level: str = Field(description="Its level: DEBUG, INFO, WARNING, ERROR or CRITICAL")
    message: str = Field(description="Its text (with the traceback it logged, if any)")


class AttemptLogsOut(BaseModel):
    """The last lines a handler logged in one attempt, oldest first."""

    attempt: int = Field(description="The attempt's number, from 1")
    lines: list[LogLineOut] = Field(
        description="Oldest first: the last ATTEMPT_LOG_MAX_BYTES of them (64 KiB); a running "
        "attempt's are stored every few seconds, and all of them when it ends"
    )
    dropped: int = Field(description="How many earlier lines were not kept")


class TraceOut(BaseModel):
    """Where a task's trace is."""

    trace_id: str | None = Field(description="W3C trace id; null when none was recorded")
    url: str | None = Field(description="The trace in the tracing UI (CONVEYOR_TRACE_URL)")
