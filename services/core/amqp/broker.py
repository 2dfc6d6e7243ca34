"""A connection to RabbitMQ that the service can start without, and that heals itself."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)

from services.core.amqp.topology import Topology, declare_exchange, declare_queue, declare_topology
from services.core.domain import DEFAULT_QUEUE

logger = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """RabbitMQ is not connected, or did not confirm a message."""


class Broker:
    """Publishes task messages with confirms; opens consumers for workers.

    `start()` returns at once: the first connection is retried in the background, and
    once made, aio-pika's robust connection reconnects and declares the topology again.
    """

    def __init__(self, url: str, topology: Topology, *, retry_seconds: float = 1.0) -> None:
        self._url = url
        self.topology = topology
        self._retry_seconds = retry_seconds
        self.confirm_timeout = 5.0
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._channel: AbstractChannel | None = None
        self._connecting: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        """Begin connecting in the background."""
        self._connecting = asyncio.create_task(self._connect_forever(), name="amqp-connect")

    async def _connect_forever(self) -> None:
        while True:
            try:
                self._connection = await aio_pika.connect_robust(self._url, timeout=5)
                channel = await self._connection.channel(on_return_raises=True)
                self._exchange = await declare_topology(channel, self.topology)
                self._channel = channel
                self.connected.set()
                return
            except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as error:
                logger.warning("RabbitMQ unreachable, retrying: %s", error)
                await self._drop()
                await asyncio.sleep(self._retry_seconds)

    async def _drop(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._exchange = self._channel = None

    @property
    def ready(self) -> bool:
        """True while the connection is open."""
        return (
            self._connection is not None
            and not self._connection.is_closed
            and (self._channel is not None and not self._channel.is_closed)
        )

    async def publish(self, messages: Mapping[uuid.UUID, tuple[str, Mapping[str, str]]]) -> None:
        """Publish one persistent message per task to its queue (given with its headers);
        await every confirm.

        Raises BrokerUnavailable unless RabbitMQ confirmed them all: the tasks are then
        left for the relay, so an outage costs time, never a task.
        """
        if not self.ready or self._exchange is None:
            raise BrokerUnavailable("not connected")
        exchange = self._exchange
        try:
            await asyncio.gather(
                *(
                    exchange.publish(
                        _message(task_id, headers),
                        self.topology.routing_key(queue),
                        timeout=self.confirm_timeout,
                    )
                    for task_id, (queue, headers) in messages.items()
                )
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError) as error:
            raise BrokerUnavailable(str(error) or type(error).__name__) from error

    async def ready_messages(self, queue: str = DEFAULT_QUEUE) -> int:
        """How many messages wait in `queue`'s quorum queue, not yet delivered."""
        return (await self.queue_counts(queue))[0]

    async def queue_counts(self, queue: str = DEFAULT_QUEUE) -> tuple[int, int]:
        """`queue`'s quorum queue as the broker has it now: (messages waiting, not yet
        delivered; consumers). Unacked messages are in neither: RabbitMQ does not say how
        many over AMQP."""
        if not self.ready or self._channel is None:
            raise BrokerUnavailable("not connected")
        try:
            # Not RobustChannel.declare_queue(passive=True): it answers a queue it declared
            # before from its cache, with the count of that first declaration.
            channel = await self._channel.get_underlay_channel()
            declared = await channel.queue_declare(self.topology.queue(queue), passive=True)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
            raise BrokerUnavailable(str(error) or type(error).__name__) from error
        return int(declared.message_count or 0), int(declared.consumer_count or 0)

    async def consume_queue(self, prefetch: int, queue: str = DEFAULT_QUEUE) -> AbstractQueue:
        """A channel with `prefetch` unacked messages at most, and `queue`'s quorum queue
        on it."""
        await self.connected.wait()
        assert self._connection is not None
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        exchange = await declare_exchange(channel, self.topology)
        return await declare_queue(channel, self.topology, exchange, queue)

    async def close(self) -> None:
        """Stop connecting, and close the connection."""
        if self._connecting is not None:
            self._connecting.cancel()
        await self._drop()


def _message(task_id: uuid.UUID, headers: Mapping[str, str]) -> aio_pika.Message:
    return aio_pika.Message(
        body=str(task_id).encode(),
        headers=dict(headers),
        message_id=str(task_id),
        content_type="text/plain",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
