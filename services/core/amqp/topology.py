"""Every exchange and queue the service uses, named and declared in this one place.

A message is a claim ticket, not the task: the worker that takes one claims the most
urgent ready task from PostgreSQL (which is usually, but not always, the task it names).
That is what makes priority hold across the whole backlog, on quorum queues, which are
replicated but have no per-message priority.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from services.core.domain import DEFAULT_QUEUE

ROUTING_KEY = "task"


@dataclass(frozen=True, slots=True)
class Topology:
    """An installation's exchange and one quorum queue per task queue of its settings, so
    that a worker pool only wakes for its own queues' tasks."""

    prefix: str
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)

    @property
    def exchange(self) -> str:
        return self.prefix

    def queue(self, name: str = DEFAULT_QUEUE) -> str:
        """The RabbitMQ queue of the task queue `name` (the default one keeps its name
        from before there were several)."""
        return f"{self.prefix}.tasks" if name == DEFAULT_QUEUE else f"{self.prefix}.tasks.{name}"

    def routing_key(self, name: str = DEFAULT_QUEUE) -> str:
        return ROUTING_KEY if name == DEFAULT_QUEUE else f"{ROUTING_KEY}.{name}"

    def sent_to(self, name: str = DEFAULT_QUEUE) -> str:
        """Where a message goes, as tracing names it: `{exchange}:{routing key}`."""
        return f"{self.exchange}:{self.routing_key(name)}"

    def taken_from(self, name: str = DEFAULT_QUEUE) -> str:
        """Where a consumer takes it: `{exchange}:{routing key}:{queue}`."""
        return f"{self.sent_to(name)}:{self.queue(name)}"


async def declare_exchange(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare the direct exchange that task messages are published to."""
    return await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )


async def declare_queue(
    channel: AbstractChannel, topology: Topology, exchange: AbstractExchange, name: str
) -> AbstractQueue:
    """Declare the quorum queue of the task queue `name`, bound to the exchange."""
    queue = await channel.declare_queue(
        topology.queue(name), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, topology.routing_key(name))
    return queue


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare the exchange and every queue's quorum queue, bound to it; safe to repeat."""
    exchange = await declare_exchange(channel, topology)
    for name in topology.queues:
        await declare_queue(channel, topology, exchange, name)
    return exchange


async def delete_topology(
    amqp_url: str, *prefixes: str, queues: tuple[str, ...] = (DEFAULT_QUEUE,)
) -> None:
    """Delete the queues and exchange of each prefix, where they exist (tests, benchmarks)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for prefix in prefixes:
            topology = Topology(prefix, queues)
            names = [("queue_delete", topology.queue(name)) for name in queues]
            # A channel closes on a name that does not exist: one channel per deletion.
            for delete, name in [*names, ("exchange_delete", topology.exchange)]:
                channel = await connection.channel()
                try:
                    await getattr(channel, delete)(name)
                except aio_pika.exceptions.ChannelClosed:
                    pass
