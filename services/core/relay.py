"""The outbox relay: every task that needs a broker message gets one, confirmed.

A task is committed before anything is published, so a 201 never waits on RabbitMQ.
The relay then publishes a message for each task that is due and has none yet (new
tasks, retries whose backoff ended, scheduled tasks whose time came, recovered tasks),
and marks them PENDING only once the broker has confirmed. Several relays may run: each
reserves its batch in one statement (SKIP LOCKED), so none sends a message twice, and no
row stays locked while a publish waits for its confirm.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from services.core.amqp.broker import Broker, BrokerUnavailable
from services.core.batching import Batcher
from services.core.db.store import SqlTaskStore
from services.core.domain import Outgoing
from services.core.events import TasksMoved
from services.core.settings import Settings
from services.core.supervision import Alarm, rest_until
from services.core.telemetry.metrics import MESSAGES_RESENT
from services.core.telemetry.tracing import publish_spans

logger = logging.getLogger(__name__)


class Relay:
    def __init__(
        self,
        store: SqlTaskStore,
        broker: Broker,
        *,
        batch: int,
        interval: float,
        stale_after: float = 30.0,
        prefetch: int = 16,
    ) -> None:
        self._store = store
        self._broker = broker
        self._batch = batch
        self._interval = interval
        self._stale_after = stale_after
        # The unacked messages a worker's consumer holds at most (its WORKER_CONCURRENCY).
        self._prefetch = prefetch
        self._next_stale_check = 0.0
        self._alarm = Alarm()

    @classmethod
    def from_settings(cls, store: SqlTaskStore, broker: Broker, settings: Settings) -> Relay:
        return cls(
            store,
            broker,
            batch=settings.relay_batch,
            interval=settings.relay_interval_seconds,
            stale_after=settings.lost_message_seconds,
            prefetch=settings.worker_concurrency,
        )

    def kick(self) -> None:
        """Ask for a pass now, for example right after a task was committed."""
        self._alarm.kick()

    def moved(self, moved: TasksMoved) -> None:
        """A subscriber to the store's status changes: look now for tasks owed a message."""
        if moved.owed:
            self.kick()

    async def relay_once(self) -> int:
        """Publish and mark one batch of due tasks; answer how many were queued."""
        traces = await self._store.reserve_due(self._batch)
        if traces:
            await self.send(traces)
        return len(traces)

    async def send(self, traces: Outgoing) -> None:
        """Publish the messages of tasks reserved for this process, then mark them PENDING;
        when the broker would not confirm, the relay owes them a message again."""
        try:
            await self._publish(traces)
        except Exception:  # not confirmed: owed a message again at once
            await self._store.release(list(traces))
            raise
        await self._store.confirm_queued(list(traces))

    async def _publish(self, traces: Outgoing) -> None:
        """Publish each task's message in a PRODUCER span of the task's own trace."""
        with publish_spans(self._broker.topology.sent_to, traces) as carriers:
            await self._broker.publish(carriers)

    async def resend_lost(self) -> int:
        """Queue again tasks whose message is not coming: never confirmed, or gone.

        The safety net under the message accounting, checked every `stale_after` seconds.
        Messages are tickets for any task of their queue, so a queue whose queued tasks
        outnumber its messages lost that many, behind a backlog as well as in an empty
        queue: the oldest of them get new ones. The broker says how many messages wait and
        how many consumers it has, not how many messages those hold unacked. While
        messages wait, each consumer holds its prefetch of them (else the broker would
        deliver it more), counted as `prefetch` each; in an empty queue they may hold any
        number up to that, and none is counted, as ever: then every task queued
        `stale_after` ago is sent again, and a spare message costs one empty claim. A
        missing one would strand a task.
        """
        read_at = await self._store.clock()  # before the counts: see unqueue_stale()
        messages = {}
        for queue in self._broker.topology.queues:
            ready, consumers = await self._broker.queue_counts(queue)
            messages[queue] = ready + consumers * self._prefetch if ready else 0
        owed = await self._store.unqueue_stale(
            self._stale_after,
            self._batch,
            messages=messages,
            read_at=read_at,
            settle=self._settle,
        )
        MESSAGES_RESENT.inc(owed)
        if owed:
            logger.warning("%d queued task(s) had no message in the broker; sending again", owed)
        return owed

    @property
    def _settle(self) -> float:
        """How long after its reservation a task's publish has surely ended (confirmed, or
        not and released): well past the broker's confirm timeout, and short enough that
        the messages one check sends are counted by the next."""
        return min(self._stale_after / 2, 2 * self._broker.confirm_timeout)

    async def pause(self, seconds: float) -> None:
        """The rest after a pass, which kick() cuts short."""
        await self._alarm.pause(seconds)

    async def step(self) -> float:
        """One pass: resend what was lost, publish a batch; answer how long to rest."""
        if not self._broker.ready:
            return self._interval
        await self._check_stale()
        sent = await self.relay_once()
        return 0 if sent >= self._batch else await self._until_due()

    async def _check_stale(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_stale_check:
            self._next_stale_check = now + self._stale_after
            if await self.resend_lost() >= self._batch:
                # More may be owed: look again once the messages just sent count.
                self._next_stale_check = now + 2 * self._settle

    async def _until_due(self) -> float:
        return rest_until(await self._store.next_due(), self._interval)


class Handover:
    """The fast path: the messages of tasks an API process reserved as it stored them go
    out right after the commit, those of concurrent requests in one batch, without waiting
    for a relay pass. The relay stays the safety net: a task whose publish fails is
    released to it at once, and one whose process died first is sent again by
    resend_lost() after LOST_MESSAGE_SECONDS."""

    def __init__(self, relay: Relay, limit: int) -> None:
        self._relay = relay
        self._limit = limit
        self._owed = 0
        self._sending: Batcher[tuple[uuid.UUID, tuple[str, dict[str, str] | None]], None] = Batcher(
            self._send, limit
        )

    @property
    def has_room(self) -> bool:
        """False while two batches wait already: new tasks are then left to the relay,
        which reads them from PostgreSQL, so a burst faster than the broker confirms
        queues up there, not in this process's memory."""
        return self._owed < 2 * self._limit

    async def flush(self) -> None:
        """Send what waits (a process about to stop)."""
        await self._sending.flushed()

    def send_soon(self, reserved: Outgoing) -> None:
        """Publish these reserved tasks' messages as soon as the batch before is out."""
        self._owed += len(reserved)
        for item in reserved.items():
            self._sending.put(item)

    async def _send(
        self, items: list[tuple[uuid.UUID, tuple[str, dict[str, str] | None]]]
    ) -> list[None]:
        try:
            await self._relay.send(dict(items))
        except BrokerUnavailable as error:  # released: the relay sends them once it can
            logger.warning("%d message(s) left to the relay: %s", len(items), error)
            self._relay.kick()
        except Exception as error:  # noqa: BLE001 - released, or left to resend_lost()
            logger.warning("%d message(s) left to the relay: %r", len(items), error)
            self._relay.kick()
        finally:
            self._owed -= len(items)
        return [None] * len(items)
