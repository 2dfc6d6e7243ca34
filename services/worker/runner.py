"""The worker: takes claim tickets from RabbitMQ, runs tasks in parallel, drains on SIGTERM.

Each message is a ticket: when a slot is free the worker claims the most urgent ready
task in PostgreSQL under a lease, acks the ticket once that claim is committed (the acks
of one pass of the loop go in runs, see acks.py), and from then on the lease (renewed for
every held task in one statement per heartbeat) is what keeps the task. The attempt number
fences every later write.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from services.core.amqp.broker import Broker
from services.core.batching import Batcher
from services.core.db.store import SqlTaskStore
from services.core.domain import Claim, Queue, Status
from services.core.errors import StoreUnavailable
from services.core.kinds import Kind
from services.core.loops import Parts, loops_of, running
from services.core.loops.consume import Consumer
from services.core.outputs import LogWindow
from services.core.settings import Settings
from services.core.supervision import Supervisor
from services.worker import telemetry
from services.worker.acks import Acks
from services.worker.execution import Held, record, run_attempt
from services.worker.presence import Presence

logger = logging.getLogger(__name__)

CLAIM_PATIENCE = 2.0
# A ticket held back by its queue's pause or limits goes back to the queue after this
# long (well within RabbitMQ's consumer timeout), and is delivered again.
HELD_PATIENCE = 60.0
# How long a worker reuses what it read of a queue's pause and limits.
BLOCKED_CACHE_SECONDS = 0.1
# A running attempt's new log lines go with the heartbeat at most this often (all of them
# go with its end): a chatty handler's kept lines are not rewritten at every beat.
LOG_SECONDS = 5.0


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
        self._limits = settings.output_limits()
        self.worker_id = settings.worker_id or default_worker_id()
        # Its row in the worker registry, under the id its leases carry.
        self.presence = Presence.of(store, settings, self.worker_id, kinds.values())
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._held: dict[uuid.UUID, Held] = {}
        # Group commit: concurrent claims, and concurrent results, share statements.
        queues = settings.queue_map()
        self._queues = {name: queues[name] for name in settings.worker_queues}
        self._claims: dict[str, Batcher[None, Claim | None]] = {
            name: Batcher(functools.partial(self._claim_batch, queue), settings.worker_concurrency)
            for name, queue in self._queues.items()
        }
        self._results: Batcher[tuple[uuid.UUID, int, str], Status | None] = Batcher(
            self._complete_batch, settings.worker_concurrency
        )
        self._jobs: set[asyncio.Task[None]] = set()
        # What each queue's pause and limits allowed when last read: (read at, wait).
        self._blocked: dict[str, tuple[float, float | None]] = {}
        # The channel consuming each queue's tickets, while one is open.
        self._consuming: dict[str, AbstractQueue] = {}
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
        await self._work()
        logger.info("worker %s stopped", self.worker_id)

    async def _work(self) -> None:
        parts = Parts(self._settings, self._store, worker=self)
        with telemetry.slots(self._settings.worker_concurrency):
            async with running(loops_of("worker", parts), self.supervisor) as loops:
                await self._stopping.wait()
                await loops.stop(Consumer.name)
                await self._drain()
                # Only now: no job acks or rejects a ticket on this channel any more. A frame
                # sent after Channel.Close makes RabbitMQ close the whole connection (504).
                await self._close_channels()

    async def idle(self, poll: float = 0.02) -> None:
        """Return once no ticket waits in the queue and no slot is busy, twice in a row."""
        await self._broker.connected.wait()
        quiet = 0
        while quiet < 2:
            await asyncio.sleep(poll)
            busy = self._jobs or await self._waiting() > 0
            quiet = 0 if busy else quiet + 1

    async def run_until_idle(self) -> None:
        """Burst mode: work until no ticket waits and every slot is idle, then return.

        Tickets the consumer had taken but not started go back to the queue when its
        channel closes; the worker then starts over, so it returns only once the queue
        is empty with nothing running. A retry whose backoff is still running has no
        ticket yet, so it does not keep the worker.
        """
        while True:
            self._stopping.clear()
            working = asyncio.create_task(self.run())
            try:
                await self.idle()
            finally:
                self.stop()
                await working
            if await self._waiting() == 0:
                return

    async def _waiting(self) -> int:
        """Tickets waiting in this worker's queues."""
        return sum([await self._broker.ready_messages(name) for name in self._queues])

    async def consume_once(self) -> float:
        """Consume each queue on a channel of its own until the broker drops one; reopen
        them all in a second.

        When run() cancels it, leaving the iterators cancels the consumers, but the
        channels stay open for the jobs still settling their tickets: run() closes them
        after them.
        """
        consumers = [
            asyncio.create_task(self._consume_queue(queue)) for queue in self._queues.values()
        ]
        try:
            done, _ = await asyncio.wait(consumers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for consumer in consumers:
                consumer.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
        await self._close_channels()
        for consumer in done:
            if consumer.exception() is not None:
                raise consumer.exception()  # type: ignore[misc]
        return 1.0

    async def _consume_queue(self, queue: Queue) -> None:
        channel = await self._broker.consume_queue(self._settings.worker_concurrency, queue.name)
        self._consuming[queue.name] = channel
        await self._consume(channel, queue)

    async def _close_channels(self) -> None:
        """Tickets taken but not acked go back to the queue when the channel closes."""
        consuming, self._consuming = self._consuming, {}
        for channel in consuming.values():
            with contextlib.suppress(Exception):
                await channel.channel.close()

    async def _consume(self, channel: AbstractQueue, queue: Queue) -> None:
        acks = Acks()  # delivery tags belong to the channel
        async with channel.iterator() as tickets:
            async for ticket in tickets:
                acks.taken(ticket)
                try:
                    await self._slots.acquire()
                except asyncio.CancelledError:  # stopping: this ticket goes back at once
                    await acks.reject(ticket)
                    raise
                job = asyncio.create_task(self._take(ticket, queue, acks))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
        logger.warning("the broker closed the channel consuming %s", queue.name)

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

    async def _take(self, ticket: AbstractIncomingMessage, queue: Queue, acks: Acks) -> None:
        received = time.time_ns()
        claim: Claim | None = None
        try:
            claim, held_back = await self._claim(ticket, queue, acks)
            if claim is not None:
                await self._execute(claim, ticket, received, queue, held_back)
        except Exception:  # the outermost loop of one job: log and carry on
            if acks.unsettled(ticket):  # it failed before its claim: the ticket goes back
                await acks.reject(ticket)
            # A ticket may claim another task than the one it names: name the one claimed.
            task_id, carrier = ticket.message_id, dict[str, Any](ticket.headers)
            if claim is not None:
                task_id, carrier = str(claim.task.id), claim.trace_context or {}
            logger.exception("job failed", extra=telemetry.about(task_id, carrier))
        finally:
            self._slots.release()

    async def _claim(
        self, ticket: AbstractIncomingMessage, queue: Queue, acks: Acks
    ) -> tuple[Claim | None, float]:
        """Claim a task of `queue` for `ticket`; ack it once the claim is committed. Also
        answers how long the queue's pause or limits held the claim back.

        A ticket is acked without a claim only when no queued task can be claimed, and
        then takes a queued task of a tenant at TENANT_MAX_RUNNING, if any, out of the
        queue with it (see unqueue_one); while queued tasks exist but other claims hold
        them for a moment, the claim is tried again, and after CLAIM_PATIENCE seconds the
        ticket goes back to the queue. So every queued task keeps a message that will
        claim it. While the queue is paused or at one of its limits, the ticket waits here
        without holding a slot, and is tried again when the queue may have room; after
        HELD_PATIENCE seconds, it goes back to the queue.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLAIM_PATIENCE
        held_back = 0.0
        try:
            while not self._stopping.is_set() and not _closed(ticket):
                claim = await self._claims[queue.name].submit(None)
                named = _named(ticket)
                if claim is None and named is not None:
                    claim = await self._store.claim_named(
                        self.worker_id, self._settings.lease_seconds, named, queue
                    )
                if claim is not None or not await self._store.has_ready(queue.name):
                    if claim is None:
                        # A queued task left now waits for its tenant to run fewer than
                        # TENANT_MAX_RUNNING: the relay sends it a new message then.
                        await self._store.unqueue_one(named, queue.name)
                    await acks.ack(ticket)
                    return claim, held_back
                wait = await self._blocked_for(queue)
                if wait is not None:
                    if held_back >= HELD_PATIENCE:
                        break
                    telemetry.held_back(queue.name)
                    started = loop.time()
                    await self._wait_for_room(wait)
                    held_back += loop.time() - started
                    deadline = loop.time() + CLAIM_PATIENCE
                elif loop.time() > deadline:
                    break
                else:
                    await asyncio.sleep(0.005)
        except StoreUnavailable as error:
            logger.warning("claim failed, ticket returned: %s", error)
            await asyncio.sleep(1.0)
        await acks.reject(ticket)
        return None, held_back

    async def _blocked_for(self, queue: Queue) -> float | None:
        """The store's blocked_for(), read at most every BLOCKED_CACHE_SECONDS a queue:
        many tickets of a held-back queue share one read."""
        now = asyncio.get_running_loop().time()
        read_at, wait = self._blocked.get(queue.name, (-1.0, None))
        if now - read_at > BLOCKED_CACHE_SECONDS:
            wait = await self._store.blocked_for(queue)
            self._blocked[queue.name] = (now, wait)
        return wait

    async def _wait_for_room(self, seconds: float) -> None:
        """Wait `seconds` (less if the worker stops) with this job's slot free meanwhile."""
        self._slots.release()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
        finally:
            # Shielded: a job cancelled here still gets its slot back, which its own end
            # then gives up, so the count of slots stays right.
            await asyncio.shield(self._slots.acquire())

    async def _claim_batch(self, queue: Queue, wanted: list[None]) -> list[Claim | None]:
        claims: list[Claim | None] = list(
            await self._store.claim_many(
                self.worker_id,
                self._settings.lease_seconds,
                self._settings.aging_seconds,
                len(wanted),
                queue,
            )
        )
        return claims + [None] * (len(wanted) - len(claims))

    async def _complete(self, task_id: uuid.UUID, attempt: int, result: str) -> Status | None:
        return await self._results.submit((task_id, attempt, result))

    async def _complete_batch(
        self, results: list[tuple[uuid.UUID, int, str]]
    ) -> list[Status | None]:
        """Record results, with the progress reported since the last heartbeat (a handler's
        last word, say 1.0 "done", is kept however soon it returns) and the lines logged."""
        ids = [i for i, _, _ in results]
        return await self._store.complete_many(results, self._reported(ids), self._logged(ids))

    def _reported(self, task_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """Take the progress reported and not yet stored of these held tasks."""
        progress = {}
        for task_id in task_ids:
            held = self._held.get(task_id)
            if held is not None and held.context is not None and held.context.reported:
                progress[task_id], held.context.reported = held.context.reported, None
        return progress

    def _logged(
        self, task_ids: list[uuid.UUID], every: float | None = None
    ) -> dict[uuid.UUID, LogWindow]:
        """The log lines of these held tasks to store: every attempt's, at its end; with
        `every`, of those with lines new since they were last taken `every` s ago or more."""
        now = time.monotonic()
        logs = {}
        for task_id in task_ids:
            held = self._held.get(task_id)
            if held is None or held.log is None:
                continue
            window = held.log.window() if every is None else held.log.due(now, every)
            if window is not None:
                logs[task_id] = window
        return logs

    async def _execute(
        self,
        claim: Claim,
        ticket: AbstractIncomingMessage,
        received: int,
        queue: Queue,
        held_back: float,
    ) -> None:
        """Run one claimed attempt and record its outcome, fenced by the attempt number."""
        task = claim.task
        source = self._broker.topology.taken_from(queue.name)
        ticket_of = _named(ticket)
        with telemetry.attempt(claim, source, ticket.headers, ticket_of, received, held_back):
            held = Held(claim)
            self._held[task.id] = held
            try:
                kind = self._kinds.get(task.kind)
                running = run_attempt(
                    held, kind, self._settings.default_timeout_seconds, self._limits
                )
                outcome = await telemetry.handler_run(task.kind, task.queue, running)
                with telemetry.recording(outcome.action):
                    logs = held.log.window() if held.log is not None else None
                    status = await record(
                        self._store, self._settings, claim, outcome, self._complete, logs
                    )
            finally:
                del self._held[task.id]
            telemetry.recorded(claim, outcome, status)

    async def heartbeat(self) -> None:
        """Renew every held lease in one statement; stop what was cancelled or taken over.
        Then tell the worker registry, in a statement of its own that cannot fail the beat,
        how many tasks run and whether the worker drains."""
        await self._renew_leases()
        await self.presence.beat(self.held, self._stopping.is_set())

    async def _renew_leases(self) -> None:
        held = {task_id: h for task_id, h in self._held.items() if h.reason is None}
        beat = await self._store.heartbeat(
            self.worker_id,
            [(task_id, h.claim.attempt) for task_id, h in held.items()],
            self._settings.lease_seconds,
            self._reported(list(held)),
            self._logged(list(held), LOG_SECONDS),
        )
        for task_id, h in held.items():
            if task_id in beat.cancel_requested:
                h.stop("cancel")
            elif task_id not in beat.held and h.handler is not None and not h.handler.done():
                # Not merely finished since the snapshot: the lease was taken over.
                h.stop("lost")


def _closed(ticket: AbstractIncomingMessage) -> bool:
    """The ticket's channel is gone: the broker has the ticket back already."""
    return bool(getattr(ticket.channel, "is_closed", False))


def _named(ticket: AbstractIncomingMessage) -> uuid.UUID | None:
    try:
        return uuid.UUID(ticket.body.decode())
    except (UnicodeDecodeError, ValueError):
        return None
