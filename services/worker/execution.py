"""Running one claimed attempt: the handler under its time limit, and the outcome it earns."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from services.core.db.store import SqlTaskStore
from services.core.domain import Claim, Status, retry_delay
from services.core.errors import StoreUnavailable, TaskFailed
from services.core.kinds import Kind, TaskContext
from services.core.outputs import (
    AttemptLog,
    LogWindow,
    OutputLimits,
    OutputRefused,
    clean_tail,
    clean_text,
    error_type,
    imported,
    result_json,
    traceback_text,
)
from services.core.settings import Settings

logger = logging.getLogger(__name__)

StopReason = Literal["cancel", "lost", "drain"]
# A task of a kind this worker does not run goes back to its queue for a quarter of its
# age, within these bounds (s): a task that waits long for a worker is tried rarely.
UNKNOWN_KIND_SECONDS = (5.0, 300.0)


@dataclass(slots=True)
class Held:
    """A task this worker runs: its attempt number and the handler's asyncio task."""

    claim: Claim
    handler: asyncio.Task[Any] | None = None
    reason: StopReason | None = None
    context: TaskContext | None = None
    # The lines its handler logs through its context's logger.
    log: AttemptLog | None = None

    def stop(self, reason: StopReason) -> None:
        """Stop the handler; what is recorded then follows `reason`."""
        if self.reason is None:
            self.reason = reason
        if self.handler is not None:
            self.handler.cancel()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to record: one of the store's guarded writes."""

    action: Literal["complete", "fail", "cancelled", "hand_back", "nothing"]
    # The result as JSON text, made fit to store by services.core.outputs.
    result: str = "null"
    error: str | None = None
    retryable: bool = True
    timed_out: bool = False
    # For a person to debug a failure with: the exception's class and its traceback (of a
    # time-out, where the handler was). They decide nothing, so outcomes compare without.
    error_type: str | None = field(default=None, compare=False)
    traceback: str | None = field(default=None, compare=False)
    # The handler failed it on purpose (TaskFailed): its message is meant to say why.
    deliberate: bool = field(default=False, compare=False)
    # A task handed back is due again so many seconds later.
    after_seconds: float = 0.0


def _outcome_of(
    held: Held, timed_out: float | None, limits: OutputLimits, stack: str | None = None
) -> Outcome:
    """What the end of `held`'s handler earns; `timed_out` is its time limit when it ran
    out of it, and `stack` where the handler was then."""
    handler = held.handler
    assert handler is not None
    if timed_out is not None:
        return Outcome(
            "fail",
            error=f"timed out after {timed_out:g} s",
            timed_out=True,
            error_type=TimeoutError.__name__,
            traceback=stack,
        )
    if handler.cancelled():
        return {
            "cancel": Outcome("cancelled"),
            "drain": Outcome("hand_back"),
            "lost": Outcome("nothing"),
            None: Outcome(
                "fail",
                error="the handler was cancelled",
                error_type=error_type(asyncio.CancelledError()),
            ),
        }[held.reason]
    error = handler.exception()
    if isinstance(error, TaskFailed):
        told = _told(error, limits)
        details = _details(error, limits)
        return Outcome("fail", error=told, retryable=error.retryable, deliberate=True, **details)
    if error is not None:
        return Outcome("fail", error=_told(error, limits, named=True), **_details(error, limits))
    try:
        return Outcome("complete", result=result_json(handler.result(), limits))
    except Exception as problem:  # noqa: BLE001 - the handler's own objects may raise anything
        told = _told(problem, limits, named=True)
        return Outcome("fail", error=told, retryable=False, **_details(problem, limits))


def _details(error: BaseException, limits: OutputLimits) -> dict[str, Any]:
    """The class and traceback of an exception, for Outcome. A refused result's traceback
    would show only the output boundary's own code: it is left out."""
    shown = not isinstance(error, OutputRefused)
    return {
        "error_type": error_type(error),
        "traceback": traceback_text(error, limits.error_max_bytes) if shown else None,
    }


_STACK_HEADING = "Where the handler was when its time ran out (most recent call last):\n"


def _stack_of(handler: asyncio.Task[Any], limits: OutputLimits) -> str:
    """Where a running handler waits: its chain of awaiting coroutines, outermost first."""
    frames = []
    awaited: Any = handler.get_coro()
    while getattr(awaited, "cr_frame", None) is not None:
        frames.append((awaited.cr_frame, awaited.cr_frame.f_lineno))
        awaited = awaited.cr_await
    lines = imported(traceback.StackSummary.extract(frames)).format()
    return clean_tail(_STACK_HEADING + "".join(lines), limits.error_max_bytes)


def _told(error: BaseException, limits: OutputLimits, named: bool = False) -> str:
    """What an error says, as PostgreSQL can keep it, within ERROR_MAX_BYTES. A handler's
    exception is its own class: even its str() may fail."""
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - a message that cannot be read is still a failure
        text = "(its message could not be read)"
    name = type(error).__name__
    if not text:
        text = f"{name} with no message"
    elif named and not isinstance(error, OutputRefused):
        text = f"{name}: {text}"
    return clean_text(text, limits.error_max_bytes)


async def run_attempt(
    held: Held, kind: Kind | None, default_timeout: float, limits: OutputLimits
) -> Outcome:
    """Run the handler of `held` to its end, its time limit, or a stop; say what to record.

    The limit is the task's own, else its kind's, else `default_timeout`: every attempt
    has one, so no task holds a slot for ever. What the handler gives back passes the
    output boundary (`services.core.outputs`) here, so a result is stored as JSON text.
    """
    task = held.claim.task
    if kind is None:
        # A worker of another version runs it (a rollout), or none has come yet: back to
        # its queue with the attempt uncounted, for a while, so other workers take it.
        age = (datetime.now(UTC) - task.created_at).total_seconds()
        low, high = UNKNOWN_KIND_SECONDS
        after = min(max(age / 4 * random.uniform(0.8, 1.2), low), high)
        return Outcome("hand_back", error=f"no handler for {task.kind!r}", after_seconds=after)
    payload: Any = task.payload
    if kind.payload is not None:
        try:
            payload = kind.payload.model_validate(task.payload)
        except ValidationError as error:
            # Retried as any failure: in a rollout, a worker of the other version may take it.
            told = f"the payload does not fit {kind.payload.__name__}: {error}"
            return Outcome("fail", error=clean_text(told, limits.error_max_bytes))
    limit = task.timeout_seconds or kind.timeout_seconds or default_timeout
    if kind.takes_context:
        held.context = _context(held, limit, limits)
        running = kind.handler(payload, held.context)
    else:
        running = kind.handler(payload)
    held.handler = asyncio.create_task(running, name=f"task-{task.id}")
    if held.reason is not None:  # stopped before it could start
        held.handler.cancel()
    done, _ = await asyncio.wait({held.handler}, timeout=limit)
    if done:
        return _outcome_of(held, None, limits)
    stack = _stack_of(held.handler, limits)
    held.handler.cancel()
    await asyncio.wait({held.handler})
    return _outcome_of(held, limit, limits, stack)


def _context(held: Held, limit: float, limits: OutputLimits) -> TaskContext:
    claim = held.claim
    task = claim.task
    held.log = AttemptLog(limits.log_max_bytes)
    return TaskContext(
        id=task.id,
        attempt=claim.attempt,
        tenant=claim.tenant,
        queue=task.queue,
        deadline=datetime.now(UTC) + timedelta(seconds=limit),
        logger=AttemptLogger(logging.getLogger(f"conveyor.task.{task.kind}"), task.id, held.log),
    )


class AttemptLogger(logging.LoggerAdapter[logging.Logger]):
    """A handler's logger: its lines go to the worker's log with the task's id, like any
    line about a task, and are kept with the attempt (INFO and above whatever the
    worker's log level, DEBUG when its logger is enabled for it) for the API to show."""

    def __init__(self, logger: logging.Logger, task_id: uuid.UUID, kept: AttemptLog) -> None:
        super().__init__(logger, {"task_id": str(task_id)})
        self.kept = kept

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= logging.INFO or self.isEnabledFor(level):
            text = _line(msg, args, kwargs.get("exc_info"))
            self.kept.add(datetime.now(UTC), logging.getLevelName(level), text)
        # The handler's line, not this method, is where the record says it was logged.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        super().log(level, msg, *args, **kwargs)


def _line(msg: object, args: tuple[object, ...], exc_info: object) -> str:
    """The text of a handler's line, as a log record would make it, with the traceback of
    `exc_info` after it. A line that cannot be made is kept as a placeholder: logging
    never fails a handler."""
    try:
        text = str(msg) % args if args else str(msg)
        if exc_info:
            error = sys.exc_info()[1] if exc_info is True else exc_info
            if isinstance(error, tuple):
                error = error[1]
            if isinstance(error, BaseException):
                text += "\n" + "".join(traceback.format_exception(error)).rstrip()
    except Exception:  # noqa: BLE001 - the handler's own objects may raise anything
        text = "(a line that could not be formatted)"
    return text


Complete = Callable[[uuid.UUID, int, str], Awaitable["Status | None"]]


async def record(
    store: SqlTaskStore,
    settings: Settings,
    claim: Claim,
    outcome: Outcome,
    complete: Complete,
    logs: LogWindow | None = None,
) -> Status | None:
    """Write `outcome` with the attempt as fencing token; retry while PostgreSQL is away.

    `complete` writes a result (the worker batches many into one statement, and takes the
    handler's log lines along); a failure and a cancel are written with `logs`. Gives up
    once the lease would have run out: recovery owns the task.
    """
    task, attempt = claim.task, claim.attempt
    delay = retry_delay(
        attempt, settings.retry_base_seconds, settings.retry_max_seconds, random.random()
    )
    # Only what this attempt has: an attempt without any writes as it always did.
    failure = _present(error_type=outcome.error_type, traceback=outcome.traceback, logs=logs)
    writes: dict[str, Callable[[], Awaitable[Status | None]]] = {
        "complete": lambda: complete(task.id, attempt, outcome.result),
        "fail": lambda: store.fail(
            task.id,
            attempt,
            outcome.error or "",
            delay if outcome.retryable else None,
            timed_out=outcome.timed_out,
            **failure,
        ),
        "cancelled": lambda: store.mark_cancelled(task.id, attempt, **_present(logs=logs)),
        "hand_back": lambda: store.hand_back(task.id, attempt, outcome.after_seconds),
    }
    if outcome.action == "nothing":
        return None
    deadline = asyncio.get_running_loop().time() + settings.lease_seconds
    pause = 0.1
    while True:
        try:
            return await writes[outcome.action]()
        except StoreUnavailable as error:
            if asyncio.get_running_loop().time() + pause > deadline:
                logger.error(
                    "could not record %s: %s",
                    outcome.action,
                    error,
                    extra={"task_id": str(task.id)},
                )
                return None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)


def _present(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}
