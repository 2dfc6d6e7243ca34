"""The outbox relay: every task that needs a broker message gets one, confirmed.

A task is committed before anything is published, so a 201 never waits on RabbitMQ.
The relay then publishes a message for each task that is due and has none yet (new
tasks, retries whose backoff ended, scheduled tasks whose time came, recovered tasks),
and marks them queued only once the broker has confirmed. Several relays may run: rows
are locked with SKIP LOCKED while their messages are in flight.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from services.core.amqp.broker import Broker, BrokerUnavailable
from services.core.db.store import SqlTaskStore
from services.core.errors import StoreUnavailable
from services.core.runtime import open_clients
from services.core.settings import Settings

logger = logging.getLogger(__name__)

_MIN_PAUSE = 0.01


class Relay:
    def __init__(
        self, store: SqlTaskStore, broker: Broker, *, batch: int, interval: float
    ) -> None:
        self._store = store
        self._broker = broker
        self._batch = batch
        self._interval = interval
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Ask for a pass now, for example right after a task was committed."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish and mark one batch of due tasks; answer how many were queued."""
        async with self._store.relay_batch(self._batch) as batch:
            if batch.ids:
                await self._broker.publish(batch.ids)
                await batch.mark_queued(batch.ids)
        return len(batch.ids)

    async def run(self) -> None:
        """Relay until cancelled, waking on kick(), when a task falls due, or each interval."""
        while True:
            pause = self._interval
            if self._broker.ready:
                try:
                    sent = await self.relay_once()
                    pause = 0 if sent >= self._batch else await self._until_due()
                except (StoreUnavailable, BrokerUnavailable) as error:
                    logger.warning("relay paused: %s", error)
            if pause:
                await self._pause(pause)

    async def _until_due(self) -> float:
        due = await self._store.next_due()
        if due is None:
            return self._interval
        wait = (due - datetime.now(UTC)).total_seconds()
        return min(max(wait, _MIN_PAUSE), self._interval)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass
        self._wake.clear()



async def run_relay(settings: Settings) -> None:
    """The relay as a process of its own (`conveyor relay`), until cancelled."""
    async with open_clients(settings) as clients:
        await Relay(clients.store, clients.broker, batch=settings.relay_batch,
                    interval=settings.relay_interval_seconds).run()
