"""The task domain as pure Python: statuses, priorities and the moves between them."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Status(enum.StrEnum):
    NEW = "NEW"
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """True for the statuses that never change again."""
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
QUEUED = frozenset({Status.NEW, Status.PENDING})

# Every status change the store makes is one of these; each is a guarded UPDATE whose
# WHERE clause names the status it leaves.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.PENDING, Status.IN_PROGRESS, Status.CANCELLED}),
    Status.PENDING: frozenset({Status.IN_PROGRESS, Status.CANCELLED}),
    # Back to PENDING: a retry, a hand-back on drain, or a recovery after a lost lease.
    Status.IN_PROGRESS: frozenset(
        {Status.PENDING, Status.COMPLETED, Status.FAILED, Status.CANCELLED}
    ),
    Status.COMPLETED: frozenset(),
    # Only when a client asks to run it again (POST /api/v1/tasks/{id}:retry).
    Status.FAILED: frozenset({Status.PENDING}),
    Status.CANCELLED: frozenset({Status.PENDING}),
}


def can_move(source: Status, target: Status) -> bool:
    """Tell whether a task may go from `source` to `target`."""
    return target in TRANSITIONS[source]


class Priority(enum.StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"

    @property
    def rank(self) -> int:
        """The stored number: higher runs first."""
        return _RANKS[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        """The priority stored as `rank`."""
        return _BY_RANK[rank]


_RANKS = {Priority.LOW: 1, Priority.MEDIUM: 2, Priority.HIGH: 3}
_BY_RANK = {rank: priority for priority, rank in _RANKS.items()}


def retry_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait before the attempt after `attempt`: exponential, capped, jittered.

    `jitter` is a number in [0, 1) drawn by the caller, so this stays deterministic.
    "Full jitter" spreads retries of tasks that failed together over the whole window.
    """
    ceiling = min(cap, base * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + ceiling / 2 * jitter


# A queue's name: also part of its RabbitMQ queue's name and of metric labels.
QUEUE_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
DEFAULT_QUEUE = "default"


@dataclass(frozen=True, slots=True)
class NewTask:
    """What a client asks for; validated by the API before it gets here."""

    title: str
    description: str = ""
    priority: Priority = Priority.MEDIUM
    kind: str = "demo"
    payload: dict[str, Any] = field(default_factory=dict)
    max_attempts: int = 3
    queue: str = DEFAULT_QUEUE
    timeout_seconds: float | None = None
    scheduled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Submission:
    """A NewTask on its way into the store: whose it is, the idempotency key and request
    hash it was sent with, and the trace context of the request that sent it."""

    new: NewTask
    tenant: str = "default"
    idempotency_key: str | None = None
    request_hash: str | None = None
    trace_context: dict[str, str] | None = None


def either(values: Iterable[str]) -> str:
    """`values` as a sentence's list: "A, B or C"."""
    *most, last = values
    return f"{', '.join(most)} or {last}" if most else last


def about(text: str) -> dict[str, str]:
    """A dataclass field's metadata that says what the field holds: the API's documents
    show it as the field's description."""
    return {"description": text}


@dataclass(frozen=True, slots=True)
class Task:
    """A task as stored."""

    # Clients see it as it is: each field's metadata says what it holds, for the API's
    # documents.

    id: uuid.UUID = field(metadata=about("The task's id (a UUIDv7: ids sort by creation time)"))
    title: str = field(metadata=about("A short name for people: listings and the console show it"))
    description: str = field(
        metadata=about("Longer text for people; the service does nothing with it")
    )
    priority: Priority = field(
        metadata=about(
            f"{either(Priority)}: among ready tasks of a queue and tenant, higher starts first"
        )
    )
    status: Status = field(metadata=about(either(Status)))
    kind: str = field(metadata=about("Which handler runs the task"))
    queue: str = field(metadata=about("The queue whose workers take the task"))
    payload: dict[str, Any] = field(metadata=about("The handler's input, as submitted"))
    result: Any = field(
        metadata=about(f"What the handler returned; null until it {Status.COMPLETED}")
    )
    error: str | None = field(metadata=about("Why the last attempt failed; null when none did"))
    attempts: int = field(metadata=about("Attempts started so far"))
    max_attempts: int = field(metadata=about("Attempts allowed, from the last submit or re-run on"))
    timeout_seconds: float | None = field(
        metadata=about("Seconds an attempt may run; null: the kind's limit, else the default")
    )
    created_at: datetime = field(metadata=about("When it was created"))
    updated_at: datetime = field(metadata=about("When it last changed"))
    scheduled_at: datetime | None = field(
        metadata=about("Not started before this time; null: at once")
    )
    started_at: datetime | None = field(metadata=about("When its latest attempt started"))
    finished_at: datetime | None = field(
        metadata=about("When it reached its final status (or the attempt ended); null before")
    )
    cancel_requested: bool = field(metadata=about("True once a cancel was asked for while it ran"))
    # Kept once it finished.
    progress: dict[str, Any] | None = field(
        default=None, metadata=about("What its handler last reported: {fraction 0-1, note}")
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a task: who ran it, when, and how it ended."""

    attempt: int
    # The worker that ran it (in Kubernetes, its pod's name).
    worker_id: str | None
    started_at: datetime
    # None while it runs.
    finished_at: datetime | None
    # completed, failed, timed_out, cancelled or lost (its worker died and recovery took
    # the task back); running while it runs.
    outcome: str
    error: str | None
    # The class of the exception that failed it (TimeoutError for a time-out), and its
    # traceback (of a time-out, where the handler was); None when there was none.
    error_type: str | None = None
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptLogs:
    """The last lines a handler logged through its context's logger in one attempt."""

    attempt: int
    # Oldest first, each {"logged_at", "level", "message"}, as the worker wrote them.
    lines: list[dict[str, Any]]
    # How many earlier lines were not kept (pushed out by the bound).
    dropped: int


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """The filters of a task listing; empty means any."""

    statuses: frozenset[Status] = frozenset()
    priorities: frozenset[Priority] = frozenset()
    kind: str | None = None
    queue: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # One tenant's tasks; None is every tenant's (operators and tests only, never clients).
    tenant: str | None = None
    # Tasks whose title holds this text, in any case.
    title: str | None = None


# Tasks owed a broker message: by id, their queue and the trace context they keep.
Outgoing = dict[uuid.UUID, tuple[str, dict[str, str] | None]]


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue as the settings define it: the limits its claims keep, across all workers."""

    name: str
    # At most this many of its tasks running at once; None: no limit.
    max_running: int | None = None
    # At most this many starts a second; None: no limit.
    rate: float | None = None

    @property
    def limited(self) -> bool:
        return self.max_running is not None or self.rate is not None


class Missed(enum.StrEnum):
    """What a schedule does about due times that passed while no scheduler ran."""

    SKIP = "skip"  # nothing: it goes on from the next due time
    RUN_ONCE = "run_once"  # one task, for the latest of them


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron expression in a time zone, and the task each of its due times creates."""

    id: uuid.UUID
    tenant: str
    name: str
    cron: str
    timezone: str
    missed: Missed
    paused: bool
    task: NewTask
    # When it is due next; None while paused.
    next_run_at: datetime | None
    # The latest due time that created a task, and that task.
    last_run_at: datetime | None
    last_task_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Task]
    next_cursor: str | None


# A string PostgreSQL's text and jsonb can hold: no NUL character.
NO_NUL = r"^[^\x00]*$"


# The instants the service takes, in UTC: finite for Python and for PostgreSQL, which
# keeps datetime.min and datetime.max as -infinity and infinity. A day's margin on each
# side, so that no offset or rounding reaches either end.
MIN_INSTANT = datetime.fromisoformat("0001-01-02T00:00:00Z")
MAX_INSTANT = datetime.fromisoformat("9999-12-30T23:59:59Z")


def in_range(moment: datetime) -> bool:
    """True when the aware `moment` is from MIN_INSTANT to MAX_INSTANT, both included."""
    return MIN_INSTANT <= moment <= MAX_INSTANT


@dataclass(frozen=True, slots=True)
class Claim:
    """A task a worker holds, and the attempt number that fences its writes."""

    task: Task
    # The task's trace context, and how long it waited ready before this claim.
    trace_context: dict[str, str] | None = None
    waited_seconds: float = 0.0
    # The order in which one claim statement chose its tasks (fair share, then urgency).
    rank: tuple[Any, ...] = ()
    # Whose task it is.
    tenant: str = "default"

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
