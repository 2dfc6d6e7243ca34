"""The shapes of API.md, as pydantic models: what clients send and what they get back."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    model_validator,
)

from services.core import cron
from services.core.auth import ApiKey, Scope
from services.core.domain import (
    NO_NUL,
    QUEUE_NAME,
    Missed,
    NewTask,
    Priority,
    Schedule,
    Status,
    Task,
    TaskFilter,
    in_range,
)

PAYLOAD_LIMIT = 64 * 1024
Text = Annotated[str, Field(pattern=NO_NUL)]

TIMES = (
    "an RFC 3339 time with Z or an offset (2026-12-01T10:00:00Z), "
    "from 0001-01-02T00:00:00Z to 9999-12-30T23:59:59Z in UTC"
)
_RFC_3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc_3339(value: Any) -> Any:
    # Only text in RFC 3339 form goes on: pydantic would read a number as a Unix time.
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC_3339.fullmatch(value)):
        return value
    raise ValueError(f"must be {TIMES}")


def _in_utc(value: datetime) -> datetime:
    # Compared before the conversion, which overflows at the ends of the calendar.
    if not in_range(value):
        raise ValueError(f"must be {TIMES}")
    return value.astimezone(UTC)


# A finite time that PostgreSQL keeps as it is (see domain.in_range), in UTC.
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc_3339), AfterValidator(_in_utc)]


def _json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


# Validated as a plain object (a recursive union would report every error of every branch
# of every item: megabytes of errors for a body of bad items), and documented as one:
# payload_problem() checks what JSON Schema says poorly and generators read worse (no NUL
# in strings and keys, no NaN, depth and size).
Payload = Annotated[
    dict[str, Any], PlainValidator(_json_object, json_schema_input_type=dict[str, Any])
]


class _Unfit(ValueError):
    """What PostgreSQL could not keep in a payload."""


_LITERALS = {None: 4, True: 4, False: 5}  # null, true, false


def payload_problem(
    payload: dict[str, Any], max_depth: int, max_bytes: int = PAYLOAD_LIMIT
) -> tuple[int, str] | None:
    """Why `payload` cannot be stored, as (HTTP status, message); None when it can.

    One pass without recursion, stopping at the first problem: nesting deeper than
    `max_depth`, a NUL or a lone surrogate in a string or key (jsonb keeps neither),
    NaN or Infinity, anything else that is not JSON (422), or more than `max_bytes` as
    compact JSON in UTF-8 (413).
    """
    size, stack = 0, [(payload, 1)]
    try:
        while stack:
            value, depth = stack.pop()
            size += _bytes(value, depth, max_depth, stack)
            if size > max_bytes:
                return 413, f"the payload is over {max_bytes} bytes as compact UTF-8 JSON"
    except _Unfit as problem:
        return 422, str(problem)
    return None


def _bytes(value: Any, depth: int, max_depth: int, stack: list[tuple[Any, int]]) -> int:
    """The size of `value` without its children, which go on `stack` one level deeper."""
    if not isinstance(value, dict | list):
        return _scalar_bytes(value)
    if depth > max_depth:
        raise _Unfit(f"the payload nests deeper than {max_depth} levels")
    if isinstance(value, list):
        stack.extend((child, depth + 1) for child in value)
        return 2 + max(len(value) - 1, 0)  # [] and commas
    stack.extend((child, depth + 1) for child in value.values())
    return 2 + max(2 * len(value) - 1, 0) + sum(map(_key_bytes, value))  # {}, : and commas


def _key_bytes(key: Any) -> int:
    if not isinstance(key, str):
        raise _Unfit("an object key is not a string")
    return _text_bytes(key)


def _scalar_bytes(value: Any) -> int:
    if isinstance(value, str):
        return _text_bytes(value)
    if value is None or isinstance(value, bool):
        return _LITERALS[value]
    if isinstance(value, int):
        return len(int.__repr__(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unfit("NaN and Infinity are not JSON numbers")
        return len(float.__repr__(value))
    raise _Unfit(f"a {type(value).__name__} is not a JSON value")


def _text_bytes(text: str) -> int:
    if "\x00" in text:
        raise _Unfit("a string or key holds a NUL character, which PostgreSQL cannot keep")
    try:
        return len(encode_basestring(text).encode())  # as json.dumps(ensure_ascii=False)
    except UnicodeEncodeError:
        raise _Unfit("a string or key holds a lone surrogate, which is not UTF-8") from None


# How many unknown fields of a body are named one by one, before it is refused outright.
_UNKNOWN_NAMED = 20


class _Body(BaseModel):
    """A request body. Unknown fields are refused, each named, as long as there are few:
    a body of many thousands would make as many errors."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _few_fields(cls, data: Any) -> Any:
        known = len(cls.model_fields)
        if isinstance(data, dict) and len(data) > known + _UNKNOWN_NAMED:
            raise ValueError(f"{len(data)} fields, of which at most {known} are known")
        return data


class TaskTemplate(_Body):
    """A task's body without its start time: what a schedule makes at each due time."""

    title: Text = Field(min_length=1, max_length=200)
    description: Text = Field("", max_length=10_000)
    priority: Priority = Priority.MEDIUM
    kind: str = Field("demo", min_length=1, max_length=100)
    payload: Payload = Field(
        default_factory=dict,
        description=f"A JSON object of at most {PAYLOAD_LIMIT} bytes as compact UTF-8 JSON",
    )
    # Strict numbers and booleans: "3" is no number and 0 no boolean, as the schema says.
    max_attempts: int = Field(3, ge=1, le=20, strict=True)
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

    id: uuid.UUID
    status: Status
    attempts: int
    updated_at: AwareDatetime
    cancel_requested: bool


class TaskPage(BaseModel):
    items: list[Task]
    next_cursor: str | None


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(
        description="Where: body, query, path or header, then the field; "
        "a name over 100 characters is cut short"
    )
    msg: str


def _absent(value: object) -> bool:
    """Left out of the JSON rather than null (the fields of problem+json documents)."""
    return value is None


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = Field(
        None, description="The fields in question, at most 20 of them", exclude_if=_absent
    )
    more_errors: int | None = Field(
        None,
        ge=1,
        description="How many more errors there were than `errors` lists",
        exclude_if=_absent,
    )


def _tenant_scope(scope: Any) -> Any:
    if scope == Scope.PLATFORM:
        raise ValueError("the platform scope is given by `conveyor keys create` only")
    return scope


# The scopes a tenant's admin may give: the platform scope never goes over HTTP.
TenantScope = Annotated[
    Literal["submit", "read", "cancel", "admin"], BeforeValidator(_tenant_scope)
]


class KeyCreate(_Body):
    scopes: list[TenantScope] = Field(
        min_length=1, max_length=4, description="Any of submit, read, cancel and admin"
    )
    name: Text = Field("", max_length=200)


class KeyOut(BaseModel):
    id: str
    tenant: str
    name: str
    scopes: list[Scope]
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None

    @classmethod
    def from_key(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            tenant=key.tenant,
            name=key.name,
            scopes=sorted(key.scopes),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str = Field(description="The whole key; shown this once and stored nowhere")


class KeyPage(BaseModel):
    items: list[KeyOut]


BATCH_LIMIT = 1000
# A batch's answer gives the problem of its first so many refused tasks; the others are
# answered by their outcome and status alone, so refusals cost little whatever is sent.
BATCH_PROBLEMS = 20


class BatchTask(TaskCreate):
    """One task of a batch: a task body, and its own idempotency key."""

    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Makes this task's submission safe to repeat, as Idempotency-Key does",
    )


class BatchCreate(_Body):
    tasks: list[Any] = Field(
        min_length=1,
        max_length=BATCH_LIMIT,
        description=f"1 to {BATCH_LIMIT} task bodies, each a BatchTask; each is checked on its "
        "own, so one that is refused refuses only itself",
    )


class BatchItem(BaseModel):
    """The outcome of one task of a batch, in the order sent."""

    outcome: Literal["created", "repeated", "refused"]
    status: int = Field(description="What a single submit would have answered: 201, 200 or 4xx")
    # Left out rather than null: a refused task's answer stays a few bytes.
    task: Task | None = Field(None, exclude_if=_absent)
    problem: Problem | None = Field(
        None,
        exclude_if=_absent,
        description=f"Why this one was refused, for the first {BATCH_PROBLEMS} refused "
        "tasks (at most 3 errors, texts cut short); absent for the others",
    )


class BatchOut(BaseModel):
    COUNTED: ClassVar = ("created", "repeated", "refused")

    items: list[BatchItem]
    created: int
    repeated: int
    refused: int
    more_problems: int | None = Field(
        None,
        ge=1,
        exclude_if=_absent,
        description="Refused tasks whose problem is left out (past the first "
        f"{BATCH_PROBLEMS}); absent when none is",
    )


class QueueOut(BaseModel):
    """A queue: its limits, whether it is paused, and what it holds now."""

    name: str
    paused: bool
    max_running: int | None = Field(description="Running tasks at most, across all workers")
    rate: float | None = Field(description="Starts a second at most, across all workers")
    queued: dict[Priority, int] = Field(description="NEW and PENDING tasks, by priority")
    running: int
    oldest_ready_seconds: float | None = Field(
        description="How long the longest-waiting due task has waited; null when none waits"
    )


class QueuePage(BaseModel):
    items: list[QueueOut]


class AttemptOut(BaseModel):
    """One attempt of a task."""

    attempt: int
    worker_id: str | None = Field(description="The worker that ran it: its pod's name")
    started_at: AwareDatetime
    finished_at: AwareDatetime | None
    outcome: Literal["completed", "failed", "timed_out", "cancelled", "lost", "running"]
    error: str | None
    duration_seconds: float | None = Field(description="null while it runs")


class AttemptPage(BaseModel):
    items: list[AttemptOut]


class TaskSelection(_Body):
    """Which of the caller's tasks a bulk action takes: the listing's filters, all of
    which must hold; none selects every task."""

    status: list[Status] | None = Field(None, max_length=len(Status))
    priority: list[Priority] | None = Field(None, max_length=len(Priority))
    kind: Text | None = Field(None, min_length=1, max_length=100)
    queue: str | None = Field(None, pattern=QUEUE_NAME)
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


SCHEDULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
CRON = (
    "A cron expression of five fields (minute hour day-of-month month day-of-week), or six "
    "with the seconds first; L, # and names such as MON and JAN are understood. "
    "Examples: `0 9 * * MON-FRI` (9:00 on weekdays), `*/10 * * * * *` (every 10 seconds)"
)


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


class ScheduleCreate(_Body):
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
        description="The IANA time zone the expression is read in (Europe/Berlin); "
        "a due time that a daylight-saving change skips runs once, right after the change",
    )
    missed: Missed = Field(
        Missed.SKIP,
        description="Due times passed while no scheduler ran, by more than the grace "
        "(CONVEYOR_SCHEDULE_GRACE_SECONDS, 60 by default): skip drops them; run_once makes "
        "one task for the latest of them, unless a due time within the grace runs then",
    )
    paused: bool = Field(False, strict=True, description="Made paused: no task until it is resumed")
    task: TaskTemplate = Field(description="The task each due time makes")


class ScheduledTask(BaseModel):
    """The task each due time of a schedule makes."""

    title: str
    description: str
    priority: Priority
    kind: str
    payload: dict[str, Any]
    max_attempts: int
    timeout_seconds: float | None
    queue: str

    @classmethod
    def of(cls, task: NewTask) -> ScheduledTask:
        return cls(**{name: getattr(task, name) for name in ScheduledTask.model_fields})


class ScheduleOut(BaseModel):
    """A schedule, and when it runs next."""

    id: uuid.UUID
    name: str
    cron: str
    timezone: str
    missed: Missed
    paused: bool
    task: ScheduledTask
    next_run_at: AwareDatetime | None = Field(description="null while paused")
    next_runs: list[AwareDatetime] = Field(
        description="The next due times (up to 5), with the schedule's time zone's offset; "
        "none while paused"
    )
    last_run_at: AwareDatetime | None = Field(description="The latest due time that made a task")
    last_task_id: uuid.UUID | None = Field(description="The task it made")
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleOut:
        upcoming = []
        if schedule.next_run_at is not None:
            first = schedule.next_run_at - timedelta(microseconds=1)
            try:
                zone = cron.zone(schedule.timezone)
                times = cron.due_after(schedule.cron, schedule.timezone, first, 5)
                upcoming = [moment.astimezone(zone) for moment in times]
            except cron.BadSchedule:  # its zone left the zone data: the scheduler pauses it
                upcoming = []
        return cls(
            id=schedule.id,
            name=schedule.name,
            cron=schedule.cron,
            timezone=schedule.timezone,
            missed=schedule.missed,
            paused=schedule.paused,
            task=ScheduledTask.of(schedule.task),
            next_run_at=schedule.next_run_at,
            next_runs=upcoming,
            last_run_at=schedule.last_run_at,
            last_task_id=schedule.last_task_id,
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
        )


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None


class WhoAmI(BaseModel):
    """The caller, as its key makes it."""

    tenant: str
    key_id: str | None = Field(description="null when API keys are off")
    scopes: list[Scope] = Field(description="What the key may do (admin implies all but platform)")
    auth_enabled: bool


class MinuteOut(BaseModel):
    at: AwareDatetime = Field(description="The minute's start")
    started: int
    completed: int
    failed: int


class QueueActivityOut(BaseModel):
    """One queue, as the caller's tenant sees it."""

    name: str
    paused: bool
    ready: dict[Priority, int] = Field(
        description="Queued tasks that are due, by priority; each counted up to 10,000"
    )
    running: int
    oldest_ready_seconds: float | None
    minutes: list[MinuteOut] = Field(description="The last 15 minutes, oldest first")


class OverviewOut(BaseModel):
    queues: list[QueueActivityOut]
    window_complete: bool = Field(
        description="false when more tasks finished in the 15 minutes than were read: the "
        "minutes then start later"
    )


class TraceOut(BaseModel):
    """Where a task's trace is."""

    trace_id: str | None = Field(description="W3C trace id; null when none was recorded")
    url: str | None = Field(description="The trace in the tracing UI (CONVEYOR_TRACE_URL)")
