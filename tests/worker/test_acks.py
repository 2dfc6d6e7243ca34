"""Acks in runs, on a real RabbitMQ channel: what the broker still holds after each pattern
of acks and rejects shows which tickets a multiple ack covered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from services.core.settings import Settings
from services.worker.acks import Acks


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    async with await aio_pika.connect(settings.amqp_url) as connection:
        yield connection


async def _taken(
    connection: aio_pika.abc.AbstractConnection, count: int
) -> tuple[AbstractQueue, Acks, list[AbstractIncomingMessage]]:
    """A queue of `count` tickets, all delivered to a channel and taken in tag order."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=count)
    queue = await channel.declare_queue(f"acks-{uuid.uuid4().hex}", exclusive=True)
    for n in range(count):
        await channel.default_exchange.publish(aio_pika.Message(str(n).encode()), queue.name)
    acks, tickets = Acks(), list[AbstractIncomingMessage]()
    async with queue.iterator() as iterator:
        async for ticket in iterator:
            acks.taken(ticket)
            tickets.append(ticket)
            if len(tickets) == count:
                break
    return queue, acks, tickets


async def _left(connection: aio_pika.abc.AbstractConnection, queue: AbstractQueue) -> list[str]:
    """The tickets the broker holds once the consuming channel's unacked ones are returned
    (by closing it): the bodies another channel then gets from the queue."""
    consuming = queue.channel
    await consuming.set_qos(prefetch_count=1)  # a round trip: any error has come back
    assert not consuming.is_closed, "an ack of a settled tag closes the channel"
    await consuming.close()
    other = await connection.channel()
    again = await other.declare_queue(queue.name, passive=True)
    bodies = []
    while (message := await again.get(no_ack=True, fail=False)) is not None:
        bodies.append(message.body.decode())
    return sorted(bodies)


async def test_the_acks_of_one_pass_go_in_one_frame_and_ack_every_ticket(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    queue, acks, tickets = await _taken(connection, 8)
    await asyncio.gather(*(acks.ack(t) for t in reversed(tickets)))
    assert acks.frames == 1
    assert await _left(connection, queue) == []


async def test_an_ack_above_an_unsettled_ticket_goes_alone_and_never_covers_it(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    queue, acks, tickets = await _taken(connection, 4)
    await asyncio.gather(*(acks.ack(t) for t in tickets[1:]))
    assert acks.frames == 3
    assert await _left(connection, queue) == ["0"]


async def test_a_reject_in_flight_is_never_covered_by_a_run_of_acks(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    queue, acks, tickets = await _taken(connection, 5)
    await asyncio.gather(
        acks.ack(tickets[0]),
        acks.ack(tickets[1]),
        acks.reject(tickets[2]),
        acks.ack(tickets[3]),
        acks.ack(tickets[4]),
    )
    # The run 0-1 in one frame, the reject, then 3 and 4 alone: 2 was not settled yet.
    assert acks.frames == 4
    assert await _left(connection, queue) == ["2"]


async def test_acks_after_the_lowest_ticket_settles_join_one_run(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    queue, acks, tickets = await _taken(connection, 6)
    await acks.ack(tickets[0])
    await asyncio.gather(*(acks.ack(t) for t in tickets[1:]))
    assert acks.frames == 2
    assert await _left(connection, queue) == []


async def test_a_run_never_overtakes_the_single_acks_of_an_earlier_pass(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    """Acks above an unsettled ticket go alone; when it settles, the next run covers their
    tags too, and must reach the broker after them: an ack of a tag already acked by a
    run closes the channel."""
    queue, acks, tickets = await _taken(connection, 8)
    alone = [asyncio.create_task(acks.ack(t)) for t in tickets[2:6]]
    for _ in range(3):  # the first pass's flush, and its first frame on its way
        await asyncio.sleep(0)
    await asyncio.gather(*(acks.ack(t) for t in (*tickets[:2], *tickets[6:])), *alone)
    assert await _left(connection, queue) == []
