"""A worker's consumer of claim tickets: reopened a second after the broker or the network
dropped it."""

from __future__ import annotations

from aio_pika.exceptions import AMQPError

from services.core.amqp.broker import BrokerUnavailable
from services.core.errors import StoreUnavailable
from services.core.loops.loop import Holder, Loop, Parts, required


class Consumer(Loop):
    name = "consume"
    # What ends a consumer that the broker or the network dropped: reopened after a pause.
    outages = (OSError, AMQPError, RuntimeError, BrokerUnavailable, StoreUnavailable)

    def __init__(self, worker: Holder) -> None:
        self._worker = worker

    @classmethod
    def of(cls, parts: Parts) -> Consumer:
        return cls(required(parts.worker, "worker"))

    async def step(self) -> float:
        return await self._worker.consume_once()
