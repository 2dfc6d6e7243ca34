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

ROUTING_KEY = "task"


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str

    @property
    def exchange(self) -> str:
        return self.prefix

    @property
    def queue(self) -> str:
        return f"{self.prefix}.tasks"

    @property
    def sent_to(self) -> str:
        """Where a message goes, as tracing names it: `{exchange}:{routing key}`."""
        return f"{self.exchange}:{ROUTING_KEY}"

    @property
    def taken_from(self) -> str:
        """Where a consumer takes it: `{exchange}:{routing key}:{queue}`."""
        return f"{self.sent_to}:{self.queue}"


async def declare_exchange(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare the direct exchange that task messages are published to."""
    return await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )


async def declare_topology(
    channel: AbstractChannel, topology: Topology
) -> tuple[AbstractExchange, AbstractQueue]:
    """Declare the exchange and the quorum queue bound to it; safe to repeat."""
    exchange = await declare_exchange(channel, topology)
    queue = await channel.declare_queue(
        topology.queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, ROUTING_KEY)
    return exchange, queue


async def delete_topology(amqp_url: str, *prefixes: str) -> None:
    """Delete the queue and exchange of each prefix, where they exist (tests, benchmarks)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for prefix in prefixes:
            topology = Topology(prefix)
            # A channel closes on a name that does not exist: one channel per deletion.
            for delete in ("queue_delete", "exchange_delete"):
                channel = await connection.channel()
                name = topology.queue if delete == "queue_delete" else topology.exchange
                try:
                    await getattr(channel, delete)(name)
                except aio_pika.exceptions.ChannelClosed:
                    pass
