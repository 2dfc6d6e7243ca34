"""What the API answers, as typed, read-only records. Fields the API adds later are
ignored, so an older client keeps working against a newer server."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

# A task's statuses and priorities (lowest first), and the statuses it never leaves.
from conveyor_client.statuses import PRIORITIES as PRIORITIES
from conveyor_client.statuses import STATUSES as STATUSES
from conveyor_client.statuses import TERMINAL as TERMINAL
from conveyor_client.statuses import Priority as Priority
from conveyor_client.statuses import Status as Status

T = TypeVar("T")


def _moment(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def record(cls: type[T], data: dict[str, Any]) -> T:
    """An instance of the dataclass `cls` from the JSON object `data`: its known fields,
    the times among them read as aware datetimes."""
    values = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = data.get(field.name)
        if field.name.endswith("_at") or field.name == "next_runs":
            value = (
                [_moment(v) for v in value or []] if field.name == "next_runs" else _moment(value)
            )
        values[field.name] = value
    return cls(**values)


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    title: str
    description: str
    priority: Priority
    status: Status
    kind: str
    queue: str
    payload: dict[str, Any]
    result: Any
    error: str | None
    attempts: int
    max_attempts: int
    timeout_seconds: float | None
    created_at: datetime
    updated_at: datetime
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    progress: dict[str, Any] | None

    @property
    def is_terminal(self) -> bool:
        """True once COMPLETED, FAILED or CANCELLED."""
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    worker_id: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    error: str | None
    # The class of the exception that failed it, and its traceback; None when there was none.
    error_type: str | None
    traceback: str | None
    duration_seconds: float | None


@dataclass(frozen=True, slots=True)
class LogLine:
    logged_at: datetime
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class AttemptLogs:
    """The last lines a handler logged in one attempt, oldest first; `dropped` earlier ones
    were not kept."""

    attempt: int
    lines: list[LogLine]
    dropped: int


@dataclass(frozen=True, slots=True)
class Submitted:
    """One task of a submit_many: `outcome` created, repeated or refused; the task, or the
    problem that refused it."""

    outcome: str
    status: int
    task: Task | None
    problem: Exception | None


@dataclass(frozen=True, slots=True)
class Changed:
    """What a bulk cancel or retry changed."""

    changed: int
    cancel_requested: int


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    name: str
    cron: str
    timezone: str
    missed: str
    paused: bool
    task: dict[str, Any]
    next_run_at: datetime | None
    next_runs: list[datetime]
    last_run_at: datetime | None
    last_task_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    paused: bool
    max_running: int | None
    rate: float | None
    queued: dict[str, int]
    running: int
    oldest_ready_seconds: float | None


@dataclass(frozen=True, slots=True)
class Worker:
    """A worker process as the registry last saw it: `state` alive, draining or gone (not
    seen within its lease); `running` of its `concurrency` slots busy."""

    id: str
    host: str
    version: str
    queues: list[str]
    kinds: list[str]
    concurrency: int
    running: int
    state: str
    started_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class KindVersion:
    """A version of a kind the API takes now: one its live workers run, or, with none
    alive, the one registered last; `registered_at` is None for a built-in kind no worker
    registered yet."""

    digest: str
    version: str
    registered_at: datetime | None
    workers: int
    queue: str
    timeout_seconds: float | None
    payload_schema: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind the API takes, with its newest version's queue and payload JSON Schema (None:
    any JSON object); a payload is taken when it fits any of its `versions`."""

    name: str
    description: str
    builtin: bool
    queue: str
    workers: int
    payload_schema: dict[str, Any] | None
    versions: list[KindVersion]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who the key makes the caller: its tenant and what it may do."""

    tenant: str
    key_id: str | None
    scopes: list[str]
    auth_enabled: bool
