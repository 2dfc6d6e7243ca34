"""The broker adapter against the real RabbitMQ."""

from __future__ import annotations

import uuid

import aio_pika

from services.core.amqp.broker import Broker
from services.core.amqp.topology import Topology
from services.core.settings import Settings


async def test_ready_messages_counts_the_queue_as_it_is_now(settings: Settings) -> None:
    """The relay's safety net reads this count on every check: it must not be a memory."""
    broker = Broker(settings.amqp_url, Topology(settings.amqp_prefix))
    broker.start()
    await broker.connected.wait()
    try:
        assert await broker.ready_messages() == 0
        await broker.publish({uuid.uuid4(): ("default", {}) for _ in range(3)})
        assert await broker.ready_messages() == 3
        async with await aio_pika.connect(settings.amqp_url) as connection:
            channel = await connection.channel()
            queue = await channel.get_queue(broker.topology.queue())
            await queue.purge()
        assert await broker.ready_messages() == 0
    finally:
        await broker.close()


async def test_queue_counts_name_the_consumers_beside_the_waiting_messages(
    settings: Settings,
) -> None:
    """The relay counts each consumer's unacked messages from this: RabbitMQ does not tell
    them over AMQP."""
    broker = Broker(settings.amqp_url, Topology(settings.amqp_prefix))
    broker.start()
    await broker.connected.wait()
    try:
        await broker.publish({uuid.uuid4(): ("default", {}) for _ in range(3)})
        assert await broker.queue_counts() == (3, 0)
        consumer = await broker.consume_queue(prefetch=2)
        held = []
        async with consumer.iterator() as messages:
            async for message in messages:
                held.append(message)
                if len(held) == 2:
                    break
            assert await broker.queue_counts() == (1, 1)
        await consumer.channel.close()
    finally:
        await broker.close()
