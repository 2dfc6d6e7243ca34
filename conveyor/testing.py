"""Run a handler in a test, as a worker would, with no PostgreSQL, RabbitMQ or worker:

    from conveyor.testing import FakeContext, run_task
    from my_company.tasks import import_rows

    async def test_import_rows_reports_progress_and_counts_rows():
        context = FakeContext(attempt=2)
        result = await run_task(import_rows, {"url": "file:rows.csv"}, context=context)
        assert result == {"rows": 3}
        assert context.progress_reports[-1] == (1.0, "3 of 3 rows")
        assert ("INFO", "imported 3 rows") in context.log_lines

The worker's rules hold: the payload reaches the handler as JSON would bring it back (as
an instance of the kind's payload model, when it has one), the
attempt runs under the task's, else the kind's, else the default time limit, and the
result must pass the same boundary (`services.core.outputs`): JSON, no NaN, bounded in
depth and size. So a test fails where the worker would fail the attempt:

| the handler                       | the worker records        | run_task                    |
|-----------------------------------|---------------------------|-----------------------------|
| (its payload misfits its model)   | a failed attempt, retried | raises ValidationError      |
| returns a JSON value              | COMPLETED with the result | returns it, as stored       |
| raises TaskFailed / another error | a failed attempt          | raises that exception       |
| returns what is not JSON          | FAILED, no retry          | raises OutputRefused        |
| runs past its time limit          | a failed attempt, retried | raises TaskTimedOut         |
| stops at a cancel request         | CANCELLED                 | raises TaskCancelled        |
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from services.core.errors import TaskFailed
from services.core.kinds import Handler, Kind, TaskContext, kind_of, load_kinds
from services.core.outputs import OutputLimits, OutputRefused, result_json
from services.core.settings import Settings

__all__ = [
    "FakeContext",
    "LogLine",
    "OutputRefused",
    "Progress",
    "TaskCancelled",
    "TaskTimedOut",
    "run_task",
]

# CONVEYOR_DEFAULT_TIMEOUT_SECONDS as shipped: the limit when neither task nor kind sets one.
DEFAULT_TIMEOUT_SECONDS: float = Settings.model_fields["default_timeout_seconds"].default


class TaskTimedOut(TimeoutError):
    """The handler ran past the attempt's time limit; the worker would try it again."""


class TaskCancelled(Exception):
    """The handler stopped at a cancel request; the worker would record CANCELLED."""


class Progress(NamedTuple):
    """One `context.progress(fraction, note)` call, as the worker would store it."""

    fraction: float
    note: str


class LogLine(NamedTuple):
    """One line a handler wrote with `context.logger`: its level name and its message."""

    level: str
    message: str


class _RecordingLogger(logging.LoggerAdapter[logging.Logger]):
    """The worker's task logger, which also keeps each line for the test to read."""

    def __init__(self, logger: logging.Logger, task_id: uuid.UUID, lines: list[LogLine]) -> None:
        super().__init__(logger, {"task_id": str(task_id)})
        self.lines = lines

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        # Formatted here, so a call whose arguments do not fit its message fails the test.
        text = str(msg) % args if args else str(msg)
        self.lines.append(LogLine(logging.getLevelName(level), text))
        super().log(level, msg, *args, **kwargs)


@dataclass
class FakeContext(TaskContext):
    """A TaskContext for tests: it keeps every progress report and log line, and can be
    asked to cancel, as the API's DELETE asks a worker. `run_task` sets its `deadline`
    and `logger` when the handler starts, and its `queue` to the kind's unless given."""

    id: uuid.UUID = field(default_factory=uuid.uuid4)
    attempt: int = 1
    tenant: str = "default"
    queue: str = ""
    deadline: datetime = field(default_factory=lambda: datetime.now(UTC))
    logger: logging.LoggerAdapter[logging.Logger] = field(init=False)
    progress_reports: list[Progress] = field(default_factory=list, init=False)
    log_lines: list[LogLine] = field(default_factory=list, init=False)
    cancel_requested: bool = field(default=False, init=False)
    _running: asyncio.Task[Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.logger = _RecordingLogger(logging.getLogger("conveyor.task"), self.id, self.log_lines)

    def progress(self, fraction: float, note: str = "") -> None:
        """As TaskContext.progress (the same checks and cleaning), kept in `progress_reports`."""
        super().progress(fraction, note)
        assert self.reported is not None
        self.progress_reports.append(Progress(**self.reported))

    def request_cancel(self) -> None:
        """Cancel the running handler, as a worker does when it learns of a cancel request:
        it gets CancelledError at its next await. Call it from a test double of something
        the handler awaits to cancel at an exact point."""
        self.cancel_requested = True
        if self._running is not None:
            self._running.cancel()

    def _start(self, kind: Kind, limit: float, running: asyncio.Task[Any]) -> None:
        self.queue = self.queue or kind.queue
        self.deadline = datetime.now(UTC) + timedelta(seconds=limit)
        logger = logging.getLogger(f"conveyor.task.{kind.name}")
        self.logger = _RecordingLogger(logger, self.id, self.log_lines)
        self._running = running


async def run_task(
    handler: Handler | str,
    payload: dict[str, Any] | None = None,
    *,
    context: FakeContext | None = None,
    timeout_seconds: float | None = None,
    cancel_after: float | None = None,
    modules: Iterable[str] = (),
    limits: OutputLimits | None = None,
) -> Any:
    """Run one attempt of a kind's handler and return its result as the worker would
    store it (tuples become lists, strings cleaned), or raise as the table above says.

    `handler` is a function marked with `@kind`, or a kind's name, found as the worker
    finds it: among the built-in kinds and those of `modules` (CONVEYOR_TASK_MODULES).
    `timeout_seconds` is the task's own limit, as a submission gives it. `cancel_after`
    requests a cancel that many seconds after the start; `context.request_cancel()` does
    it at an exact point. `limits` are CONVEYOR_RESULT_MAX_BYTES and _DEPTH, as shipped.
    """
    found = _find(handler, modules)
    context = context if context is not None else FakeContext()
    limit = timeout_seconds or found.timeout_seconds or DEFAULT_TIMEOUT_SECONDS
    stored: Any = _as_stored(payload)
    if found.payload is not None:
        stored = found.payload.model_validate(stored)
    call = found.handler(stored, context) if found.takes_context else found.handler(stored)
    running = asyncio.create_task(call, name=f"task-{context.id}")
    context._start(found, limit, running)
    canceller = None
    if cancel_after is not None:
        canceller = asyncio.get_running_loop().call_later(cancel_after, context.request_cancel)
    try:
        done, _ = await asyncio.wait({running}, timeout=limit)
    finally:
        if canceller is not None:
            canceller.cancel()
        running.cancel()  # the test itself was cancelled, or the limit passed
    if not done:
        await asyncio.wait({running})
        raise TaskTimedOut(f"timed out after {limit:g} s")
    return _outcome(running, context, limits or OutputLimits())


def _find(handler: Handler | str, modules: Iterable[str]) -> Kind:
    if not isinstance(handler, str):
        found = kind_of(handler)
        if found is None:
            raise TypeError(f"{handler!r} is not marked with @kind")
        return found
    kinds = load_kinds(modules)
    if handler not in kinds:
        known = ", ".join(sorted(kinds))
        raise LookupError(f"no kind {handler!r} (known: {known}); name its module in modules=")
    return kinds[handler]


def _as_stored(payload: dict[str, Any] | None) -> dict[str, Any]:
    """The payload as the handler gets it from PostgreSQL: a JSON object, read back."""
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise TypeError(f"a task's payload is a JSON object, not a {type(payload).__name__}")
    try:
        stored: dict[str, Any] = json.loads(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"the payload is not JSON: {error}") from error
    return stored


def _outcome(running: asyncio.Task[Any], context: FakeContext, limits: OutputLimits) -> Any:
    if running.cancelled():
        if context.cancel_requested:
            raise TaskCancelled("the handler stopped at the cancel request")
        raise TaskFailed("the handler was cancelled")
    # The handler's own exception, with its traceback, if it raised one.
    return json.loads(result_json(running.result(), limits))
