"""The worker: takes claim tickets from RabbitMQ, runs tasks in parallel, drains on SIGTERM.

Each message is a ticket: when a slot is free the worker claims the most urgent ready
task in PostgreSQL under a lease, acks the ticket once that claim is committed, and from
then on the lease (renewed for every held task in one statement per heartbeat) is what
keeps the task. The attempt number fences every later write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from services.core.amqp.broker import Broker, BrokerUnavailable
from services.core.batching import Batcher
from services.core.db.store import SqlTaskStore
from services.core.domain import Claim, Status
from services.core.errors import StoreUnavailable
from services.core.kinds import Kind
from services.core.settings import Settings
from services.core.supervision import Supervisor
from services.core.telemetry.metrics import (
    ATTEMPT_DURATION,
    QUEUE_WAIT,
    RETRIES,
    STATUS_CHANGES,
    TASKS_IN_PROGRESS,
    WORKER_SLOTS,
)
from services.core.telemetry.tracing import (
    context_of,
    db_attributes,
    db_span,
    messaging_attributes,
    trace_id_of,
    tracer,
)
from services.worker.execution import Held, Outcome, record, run_attempt

logger = logging.getLogger(__name__)

CLAIM_PATIENCE = 2.0
# What ends a consumer that the broker or the network dropped: reopened after a pause.
_CONSUMER_OUTAGES = (OSError, AMQPError, RuntimeError, BrokerUnavailable, StoreUnavailable)


def default_worker_id() -> str:
    """host-pid-random: unique per process, readable in the tasks table."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: SqlTaskStore,
        broker: Broker,
        kinds: dict[str, Kind],
        supervisor: Supervisor | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._broker = broker
        self._kinds = kinds
        self.worker_id = settings.worker_id or default_worker_id()
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._held: dict[uuid.UUID, Held] = {}
        # Group commit: concurrent claims, and concurrent results, share statements.
        self._claims: Batcher[None, Claim | None] = Batcher(
            self._claim_batch, settings.worker_concurrency
        )
        self._results: Batcher[tuple[uuid.UUID, int, Any], Status | None] = Batcher(
            store.complete_many, settings.worker_concurrency
        )
        self._jobs: set[asyncio.Task[None]] = set()
        self._queue: AbstractQueue | None = None
        self._stopping = asyncio.Event()
        # The heartbeat and the consumer; a worker whose loops keep failing is not live.
        self.supervisor = supervisor or Supervisor()

    @property
    def held(self) -> int:
        """How many tasks this worker runs now."""
        return len(self._held)

    def stop(self) -> None:
        """Begin the drain: take no more tickets; run() then finishes what it holds."""
        self._stopping.set()

    async def run(self) -> None:
        """Work until stop(), then drain: finish within the grace period, hand back the rest."""
        WORKER_SLOTS.inc(self._settings.worker_concurrency)
        heartbeat = asyncio.create_task(
            self.supervisor.run("heartbeat", self._beat), name="heartbeat"
        )
        consuming = asyncio.create_task(
            self.supervisor.run("consume", self._consume_once, outages=_CONSUMER_OUTAGES),
            name="consume",
        )
        await self._stopping.wait()
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        await self._drain()
        # Only now: no job acks or rejects a ticket on this channel any more. A frame
        # sent after Channel.Close makes RabbitMQ close the whole connection (504).
        await self._close_channel()
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        WORKER_SLOTS.dec(self._settings.worker_concurrency)
        logger.info("worker %s stopped", self.worker_id)

    async def _consume_once(self) -> float:
        """Consume on a channel of its own until the broker drops it; reopen in a second.

        When run() cancels it, leaving the iterator cancels the consumer, but the channel
        stays open for the jobs still settling their tickets: run() closes it after them.
        """
        try:
            self._queue = await self._broker.consume_queue(self._settings.worker_concurrency)
            await self._consume(self._queue)
        except Exception:
            await self._close_channel()
            raise
        await self._close_channel()
        return 1.0

    async def _close_channel(self) -> None:
        """Tickets taken but not acked go back to the queue when the channel closes."""
        queue, self._queue = self._queue, None
        if queue is not None:
            with contextlib.suppress(Exception):
                await queue.channel.close()

    async def _consume(self, queue: AbstractQueue) -> None:
        async with queue.iterator() as tickets:
            async for ticket in tickets:
                try:
                    await self._slots.acquire()
                except asyncio.CancelledError:  # stopping: this ticket goes back at once
                    await _settle(ticket.reject(requeue=True))
                    raise
                job = asyncio.create_task(self._take(ticket))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
        logger.warning("the broker closed the consuming channel")

    async def _drain(self) -> None:
        if self._jobs:
            logger.info(
                "draining %d task(s) for up to %g s", len(self._held), self._settings.drain_seconds
            )
            _, late = await asyncio.wait(set(self._jobs), timeout=self._settings.drain_seconds)
            for held in list(self._held.values()):
                held.stop("drain")
            if late:
                await asyncio.wait(late)

    async def _take(self, ticket: AbstractIncomingMessage) -> None:
        received = time.time_ns()
        try:
            claim = await self._claim(ticket)
            if claim is not None:
                await self._execute(claim, ticket, received)
        except Exception:  # the outermost loop of one job: log and carry on
            logger.exception(
                "job failed",
                extra={"task_id": ticket.message_id, "trace_id": trace_id_of(ticket.headers)},
            )
        finally:
            self._slots.release()

    async def _claim(self, ticket: AbstractIncomingMessage) -> Claim | None:
        """Claim a task for `ticket`; ack it once the claim is committed.

        A ticket is acked without a claim only when no queued task can be claimed, and
        then takes a queued task of a tenant at TENANT_MAX_RUNNING, if any, out of the
        queue with it (see unqueue_one); while queued tasks exist but other claims hold
        them for a moment, the claim is tried again, and after CLAIM_PATIENCE seconds the
        ticket goes back to the queue. So every queued task keeps a message that will
        claim it.
        """
        deadline = asyncio.get_running_loop().time() + CLAIM_PATIENCE
        try:
            while not self._stopping.is_set():
                claim = await self._claims.submit(None)
                named = _named(ticket)
                if claim is None and named is not None:
                    claim = await self._store.claim_named(
                        self.worker_id, self._settings.lease_seconds, named
                    )
                if claim is not None or not await self._store.has_ready():
                    if claim is None:
                        # A queued task left now waits for its tenant to run fewer than
                        # TENANT_MAX_RUNNING: the relay sends it a new message then.
                        await self._store.unqueue_one(named)
                    await _settle(ticket.ack())
                    return claim
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.005)
        except StoreUnavailable as error:
            logger.warning("claim failed, ticket returned: %s", error)
            await asyncio.sleep(1.0)
        await _settle(ticket.reject(requeue=True))
        return None

    async def _claim_batch(self, wanted: list[None]) -> list[Claim | None]:
        claims: list[Claim | None] = list(
            await self._store.claim_many(
                self.worker_id,
                self._settings.lease_seconds,
                self._settings.aging_seconds,
                len(wanted),
            )
        )
        return claims + [None] * (len(wanted) - len(claims))

    async def _complete(self, task_id: uuid.UUID, attempt: int, result: Any) -> Status | None:
        return await self._results.submit((task_id, attempt, result))

    async def _execute(self, claim: Claim, ticket: AbstractIncomingMessage, received: int) -> None:
        """Run one claimed attempt inside a CONSUMER span of the task's own trace."""
        task = claim.task
        claimed = time.time_ns()
        with trace.use_span(self._process_span(claim, ticket, received), end_on_exit=True):
            tracer.start_span(
                "UPDATE tasks",
                kind=SpanKind.CLIENT,
                start_time=received,
                attributes=db_attributes("UPDATE", "claim"),
            ).end(claimed)
            STATUS_CHANGES.labels(Status.IN_PROGRESS).inc()
            QUEUE_WAIT.labels(task.priority).observe(claim.waited_seconds)
            log = {"task_id": str(task.id)}
            logger.info("started %s attempt %d", task.kind, claim.attempt, extra=log)
            held = Held(claim)
            self._held[task.id] = held
            TASKS_IN_PROGRESS.inc()
            try:
                outcome = await self._run(held)
                with db_span("UPDATE", outcome.action):
                    status = await record(
                        self._store, self._settings, claim, outcome, self._complete
                    )
            finally:
                del self._held[task.id]
                TASKS_IN_PROGRESS.dec()
            _count_outcome(task.kind, outcome, status)
            logger.info("attempt %d: %s -> %s", claim.attempt, outcome.action, status, extra=log)

    def _process_span(
        self, claim: Claim, ticket: AbstractIncomingMessage, received: int
    ) -> trace.Span:
        # The message's context is the parent when it named this task; a message taken
        # for a more urgent task is only linked, so each task keeps one trace.
        sent = context_of(ticket.headers)
        own = _named(ticket) == claim.task.id
        sent_span = trace.get_current_span(sent).get_span_context()
        queue = self._broker.topology.queue
        return tracer.start_span(
            f"process {queue}",
            kind=SpanKind.CONSUMER,
            start_time=received,
            context=sent if own else context_of(claim.trace_context),
            links=[] if own or not sent_span.is_valid else [trace.Link(sent_span)],
            attributes={
                **messaging_attributes("process", queue, str(claim.task.id)),
                "conveyor.task.kind": claim.task.kind,
                "conveyor.task.attempt": claim.attempt,
            },
        )

    async def _run(self, held: Held) -> Outcome:
        task = held.claim.task
        started = time.monotonic()
        with tracer.start_as_current_span(f"run {task.kind}") as span:
            outcome = await run_attempt(
                held, self._kinds.get(task.kind), self._settings.default_timeout_seconds
            )
            if outcome.error is not None:
                span.set_status(StatusCode.ERROR, outcome.error)
        ATTEMPT_DURATION.labels(task.kind).observe(time.monotonic() - started)
        return outcome

    async def _beat(self) -> float:
        await self.heartbeat()
        return self._settings.heartbeat_seconds

    async def heartbeat(self) -> None:
        """Renew every held lease in one statement; stop what was cancelled or taken over."""
        held = {task_id: h for task_id, h in self._held.items() if h.reason is None}
        beat = await self._store.heartbeat(
            self.worker_id,
            [(task_id, h.claim.attempt) for task_id, h in held.items()],
            self._settings.lease_seconds,
        )
        for task_id, h in held.items():
            if task_id in beat.cancel_requested:
                h.stop("cancel")
            elif task_id not in beat.held and h.handler is not None and not h.handler.done():
                # Not merely finished since the snapshot: the lease was taken over.
                h.stop("lost")


async def _settle(acknowledgement: object) -> None:
    """Ack or reject a ticket; a closed channel already returned it, which is harmless."""
    with contextlib.suppress(Exception):
        await acknowledgement  # type: ignore[misc]


def _named(ticket: AbstractIncomingMessage) -> uuid.UUID | None:
    try:
        return uuid.UUID(ticket.body.decode())
    except (UnicodeDecodeError, ValueError):
        return None


def _count_outcome(kind: str, outcome: Outcome, status: Status | None) -> None:
    if status is None:
        return
    STATUS_CHANGES.labels(status).inc()
    if status is Status.PENDING and outcome.action == "fail":
        RETRIES.labels(kind).inc()
