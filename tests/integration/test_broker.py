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
