"""The machine's raw limits, measured before every section: PostgreSQL committed inserts,
RabbitMQ confirmed publishes and acked consumes. Each figure of the service is printed
beside the limit it leans on."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import aio_pika
import asyncpg

from bench.context import Bench


def run(bench: Bench) -> None:
    print("limits of this machine", file=sys.stderr)
    figures = bench.figures
    figures.inserts = asyncio.run(postgres_inserts(bench.dsn))
    figures.published, figures.consumed = asyncio.run(
        rabbitmq_limits(bench.amqp_url, f"{bench.prefix}.raw")
    )
    bench.row("PostgreSQL committed single-row inserts, 1 connection", f"{figures.inserts:,.0f}/s")
    bench.row("RabbitMQ confirmed persistent publishes (pipelined)", f"{figures.published:,.0f}/s")
    bench.row("RabbitMQ acked consumes", f"{figures.consumed:,.0f}/s")


async def postgres_inserts(dsn: str, count: int = 4000) -> float:
    """Single-row inserts a second, each its own commit, on one connection."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE TEMP TABLE bench_rows (id uuid, body text)")
        started = time.perf_counter()
        for _ in range(count):
            await connection.execute("INSERT INTO bench_rows VALUES ($1, 'x')", uuid.uuid4())
        return count / (time.perf_counter() - started)
    finally:
        await connection.close()


async def rabbitmq_limits(
    amqp_url: str, queue_name: str, count: int = 10_000
) -> tuple[float, float]:
    """Confirmed persistent publishes and acked consumes a second, on a quorum queue."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        message = aio_pika.Message(b"x", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        started = time.perf_counter()
        for offset in range(0, count, 200):  # confirms pipelined, 200 in flight
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(message, queue.name)
                    for _ in range(min(200, count - offset))
                )
            )
        published = count / (time.perf_counter() - started)
        consumed = await _consume(channel, queue, count)
        await queue.delete(if_unused=False, if_empty=False)
    return published, consumed


async def _consume(
    channel: aio_pika.abc.AbstractChannel, queue: aio_pika.abc.AbstractQueue, count: int
) -> float:
    """Acked consumes a second of the `count` messages in `queue`."""
    await channel.set_qos(prefetch_count=200)
    done = asyncio.Event()
    seen = 0

    async def take(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal seen
        await incoming.ack()
        seen += 1
        if seen == count:
            done.set()

    started = time.perf_counter()
    await queue.consume(take)
    await done.wait()
    return count / (time.perf_counter() - started)
