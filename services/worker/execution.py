"""Running one claimed attempt: the handler under its time limit, and the outcome it earns."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from services.core.db.store import SqlTaskStore
from services.core.domain import Claim, Status, retry_delay
from services.core.errors import StoreUnavailable, TaskFailed
from services.core.kinds import Kind, TaskContext
from services.core.outputs import OutputLimits, OutputRefused, clean_text, result_json
from services.core.settings import Settings

logger = logging.getLogger(__name__)

StopReason = Literal["cancel", "lost", "drain"]


@dataclass(slots=True)
class Held:
    """A task this worker runs: its attempt number and the handler's asyncio task."""

    claim: Claim
    handler: asyncio.Task[Any] | None = None
    reason: StopReason | None = None
    context: TaskContext | None = None

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


def _outcome_of(held: Held, timed_out: float | None, limits: OutputLimits) -> Outcome:
    handler = held.handler
    assert handler is not None
    if timed_out is not None:
        return Outcome("fail", error=f"timed out after {timed_out:g} s", timed_out=True)
    if handler.cancelled():
        return {
            "cancel": Outcome("cancelled"),
            "drain": Outcome("hand_back"),
            "lost": Outcome("nothing"),
            None: Outcome("fail", error="the handler was cancelled"),
        }[held.reason]
    error = handler.exception()
    if isinstance(error, TaskFailed):
        return Outcome("fail", error=_told(error, limits), retryable=error.retryable)
    if error is not None:
        return Outcome("fail", error=_told(error, limits, named=True))
    try:
        return Outcome("complete", result=result_json(handler.result(), limits))
    except Exception as problem:  # noqa: BLE001 - the handler's own objects may raise anything
        return Outcome("fail", error=_told(problem, limits, named=True), retryable=False)


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
        return Outcome("fail", error=f"no handler for kind {task.kind!r} on this worker")
    limit = task.timeout_seconds or kind.timeout_seconds or default_timeout
    if kind.takes_context:
        held.context = _context(held.claim, limit)
        running = kind.handler(task.payload, held.context)
    else:
        running = kind.handler(task.payload)
    held.handler = asyncio.create_task(running, name=f"task-{task.id}")
    if held.reason is not None:  # stopped before it could start
        held.handler.cancel()
    done, _ = await asyncio.wait({held.handler}, timeout=limit)
    if done:
        return _outcome_of(held, None, limits)
    held.handler.cancel()
    await asyncio.wait({held.handler})
    return _outcome_of(held, limit, limits)


def _context(claim: Claim, limit: float) -> TaskContext:
    task = claim.task
    return TaskContext(
        id=task.id,
        attempt=claim.attempt,
        tenant=claim.tenant,
        queue=task.queue,
        deadline=datetime.now(UTC) + timedelta(seconds=limit),
        logger=logging.LoggerAdapter(
            logging.getLogger(f"conveyor.task.{task.kind}"), {"task_id": str(task.id)}
        ),
    )


Complete = Callable[[uuid.UUID, int, str], Awaitable["Status | None"]]


async def record(
    store: SqlTaskStore,
    settings: Settings,
    claim: Claim,
    outcome: Outcome,
    complete: Complete,
) -> Status | None:
    """Write `outcome` with the attempt as fencing token; retry while PostgreSQL is away.

    `complete` writes a result (the worker batches many into one statement). Gives up
    once the lease would have run out: recovery owns the task.
    """
    task, attempt = claim.task, claim.attempt
    delay = retry_delay(
        attempt, settings.retry_base_seconds, settings.retry_max_seconds, random.random()
    )
    writes: dict[str, Callable[[], Awaitable[Status | None]]] = {
        "complete": lambda: complete(task.id, attempt, outcome.result),
        "fail": lambda: store.fail(
            task.id,
            attempt,
            outcome.error or "",
            delay if outcome.retryable else None,
            timed_out=outcome.timed_out,
        ),
        "cancelled": lambda: store.mark_cancelled(task.id, attempt),
        "hand_back": lambda: store.hand_back(task.id, attempt),
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
