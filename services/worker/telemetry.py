"""What a worker tells the outside: its spans, metrics and log lines.

The runner says what happens (its slots open, a claim is held back by its queue, an
attempt starts, its handler runs, its outcome is recorded); this module turns each event
into the trace of the task, the Prometheus series and the log, so the runner reads as the
job it does. The status changes themselves are counted where the store announces them.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from services.core.domain import Claim, Status
from services.core.telemetry.metrics import (
    ATTEMPT_DURATION,
    HAND_BACKS,
    OUTCOMES,
    QUEUE_HELD_BACK,
    QUEUE_STARTED,
    QUEUE_WAIT,
    RETRIES,
    TASKS_IN_PROGRESS,
    WORKER_SLOTS,
    kind_label,
)
from services.core.telemetry.tracing import (
    context_of,
    db_attributes,
    db_span,
    messaging_attributes,
    trace_id_of,
    tracer,
    tracing_enabled,
)
from services.worker.execution import Outcome

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def slots(concurrency: int) -> Iterator[None]:
    """A worker's `concurrency` slots are open for the block."""
    WORKER_SLOTS.inc(concurrency)
    try:
        yield
    finally:
        WORKER_SLOTS.dec(concurrency)


def held_back(queue: str) -> None:
    """A claim waits: the queue is paused or at one of its limits."""
    QUEUE_HELD_BACK.labels(queue).inc()


@contextlib.contextmanager
def attempt(
    claim: Claim,
    source: str,
    headers: Mapping[str, Any] | None,
    named: uuid.UUID | None,
    received: int,
    held_back: float = 0.0,
) -> Iterator[None]:
    """One claimed attempt, from its ticket's arrival (`received`, ns) to its record;
    `source` is where the ticket came from (`{exchange}:{routing key}:{queue}`), and
    `held_back` how long its queue's pause or limits made the claim wait (an event on the
    span says so).

    The block runs inside a CONSUMER span of the task's own trace: the ticket's context
    is the parent when the ticket named this task; a ticket taken for a more urgent task
    is only linked, so each task keeps one trace.
    """
    if not tracing_enabled():  # the same series and lines, without the spans' cost
        with _running(claim):
            yield
        return
    task = claim.task
    claimed = time.time_ns()
    sent = context_of(headers)
    own = named == task.id
    sent_span = trace.get_current_span(sent).get_span_context()
    span = tracer.start_span(
        f"process {source}",
        kind=SpanKind.CONSUMER,
        start_time=received,
        context=sent if own else context_of(claim.trace_context),
        links=[] if own or not sent_span.is_valid else [trace.Link(sent_span)],
        attributes={
            **messaging_attributes("process", source, str(task.id)),
            "conveyor.task.kind": task.kind,
            "conveyor.task.attempt": claim.attempt,
        },
    )
    with trace.use_span(span, end_on_exit=True):
        tracer.start_span(
            "UPDATE tasks",
            kind=SpanKind.CLIENT,
            start_time=received,
            attributes=db_attributes("UPDATE", "claim"),
        ).end(claimed)
        if held_back:
            span.add_event(
                "held back by the queue's pause or limits",
                {"conveyor.queue": task.queue, "conveyor.queue.wait_seconds": held_back},
            )
        with _running(claim):
            yield


@contextlib.contextmanager
def _running(claim: Claim) -> Iterator[None]:
    task = claim.task
    QUEUE_STARTED.labels(task.queue).inc()
    QUEUE_WAIT.labels(task.priority, task.queue).observe(claim.waited_seconds)
    logger.info("started %s attempt %d", task.kind, claim.attempt, extra=_log(claim))
    TASKS_IN_PROGRESS.inc()
    try:
        yield
    finally:
        TASKS_IN_PROGRESS.dec()


async def handler_run(kind: str, queue: str, running: Awaitable[Outcome]) -> Outcome:
    """The handler's own span (its children nest under it) and its duration."""
    started = time.monotonic()
    if not tracing_enabled():
        outcome = await running
    else:
        with tracer.start_as_current_span(f"run {kind}") as span:
            outcome = await running
            if outcome.error is not None:
                span.set_status(StatusCode.ERROR, outcome.error)
    ATTEMPT_DURATION.labels(kind_label(kind), queue).observe(time.monotonic() - started)
    return outcome


def recording(action: str) -> AbstractContextManager[Span]:
    """The write of an attempt's outcome (`action`), in a span of its own."""
    return db_span("UPDATE", action)


def recorded(claim: Claim, outcome: Outcome, status: Status | None) -> None:
    """The attempt's outcome is stored (status None: a newer attempt or a cancel won)."""
    if status is not None:
        OUTCOMES.labels(kind_label(claim.task.kind), status).inc()
        if status is Status.PENDING and outcome.action == "fail":
            RETRIES.labels(kind_label(claim.task.kind)).inc()
    if outcome.action == "hand_back":
        reason = "no_handler" if outcome.error else "drain"
        HAND_BACKS.labels(kind_label(claim.task.kind), reason).inc()
    if outcome.action == "fail":
        # What failed it, and where, beside the task's id: the worker's log alone says it.
        # A failure the handler meant (TaskFailed) says why in its message; its traceback
        # stays in the attempt's history, and the log keeps tracebacks for the unexpected.
        where = f"\n{outcome.traceback}" if outcome.traceback and not outcome.deliberate else ""
        logger.error(
            "attempt %d: fail -> %s: %s%s",
            claim.attempt,
            status,
            outcome.error,
            where,
            extra=_log(claim),
        )
    else:
        why = f" ({outcome.error})" if outcome.error else ""
        logger.info(
            "attempt %d: %s -> %s%s", claim.attempt, outcome.action, status, why, extra=_log(claim)
        )


def about(task_id: str | None, carrier: Mapping[str, Any] | None) -> dict[str, str | None]:
    """What a log line about a task carries: its id and its trace's."""
    return {"task_id": task_id, "trace_id": trace_id_of(carrier)}


def _log(claim: Claim) -> dict[str, str]:
    return {"task_id": str(claim.task.id)}
