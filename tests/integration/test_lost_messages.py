"""The relay's lost-message check behind a backlog, on the real PostgreSQL and RabbitMQ.

A queued task whose message the broker lost is sent again once it has been queued
LOST_MESSAGE_SECONDS, while its queue still holds a backlog of other tasks' messages;
the tasks whose messages are there get no second one, with or without a busy worker
holding some of them unacked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika

from services.core.amqp.broker import Broker
from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask, Priority, Status, Submission
from services.core.relay import Relay
from services.core.runtime import open_clients
from services.core.settings import Settings
from tests.support import kinds
from tests.support.database import fetch
from tests.support.services import running_worker
from tests.support.store import create

BACKLOG = 200
STALE = 1.0


@contextlib.asynccontextmanager
async def _relay(settings: Settings) -> AsyncIterator[tuple[Relay, Broker]]:
    """A relay with its own store and broker connection (its loop not running: the test
    takes its steps), and that broker connection."""
    async with open_clients(settings) as clients:
        await clients.broker.connected.wait()
        yield Relay.from_settings(clients.store, clients.broker, settings), clients.broker


async def _lost(store: SqlTaskStore, new: NewTask) -> uuid.UUID:
    """A task queued and PENDING whose message never reached the broker (or was dropped
    there): reserved and confirmed, published nowhere."""
    task, _ = await create(store, new)
    assert list(await store.reserve_due(10)) == [task.id]
    await store.confirm_queued([task.id])
    return task.id


async def _backlog(store: SqlTaskStore, relay: Relay, new: NewTask, n: int) -> list[uuid.UUID]:
    """`n` tasks queued behind it, each with its message in the broker."""
    ids = await _created(store, [new] * n)
    while await relay.relay_once():
        pass
    return ids


async def _created(store: SqlTaskStore, new: list[NewTask]) -> list[uuid.UUID]:
    """Store these tasks in one statement, as the API does."""
    outcomes = (await store.create_many([Submission(task) for task in new])).outcomes
    return [outcome[0].id for outcome in outcomes]  # type: ignore[index]


async def _messages(settings: Settings) -> list[uuid.UUID]:
    """The task ids the default queue's messages name, taken out of it."""
    names = []
    async with await aio_pika.connect(settings.amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            f"{settings.amqp_prefix}.tasks", passive=True, arguments={"x-queue-type": "quorum"}
        )
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            names.append(uuid.UUID(message.body.decode()))
    return names


async def _queued(settings: Settings, task_id: uuid.UUID) -> bool:
    """Whether the task is marked as having a message on its way or in its queue."""
    rows = await fetch(settings.database_url, "SELECT queued_at FROM tasks WHERE id = $1", task_id)
    return rows[0]["queued_at"] is not None


async def test_a_lost_message_behind_a_backlog_is_sent_again_and_only_it(
    settings: Settings, store: SqlTaskStore
) -> None:
    settings = settings.model_copy(update={"lost_message_seconds": STALE})
    async with _relay(settings) as (relay, broker):
        lost = await _lost(store, NewTask(title="lost", kind="noop"))
        healthy = await _backlog(store, relay, NewTask(title="backlog", kind="noop"), BACKLOG)
        assert await relay.resend_lost() == 0  # not queued long enough yet
        await asyncio.sleep(STALE + 0.2)

        assert await relay.resend_lost() == 1
        assert not await _queued(settings, lost)
        assert await relay.relay_once() == 1
        assert await broker.ready_messages() == BACKLOG + 1  # the backlog still there
        # Every message counted again: nothing more is owed.
        await asyncio.sleep(STALE + 0.2)
        assert await relay.resend_lost() == 0
    assert sorted(await _messages(settings)) == sorted([lost, *healthy])


async def test_a_lost_message_is_sent_again_beside_a_busy_worker_holding_messages_unacked(
    settings: Settings, store: SqlTaskStore
) -> None:
    """The worker runs as many tasks as it has slots and holds as many messages more,
    unacked, while the rest of the backlog waits in the queue: neither kind counts as
    lost."""
    settings = settings.model_copy(
        update={"lost_message_seconds": STALE, "task_modules": ["tests.support.kinds"]}
    )
    keys = [uuid.uuid4().hex for _ in range(BACKLOG // 10 + 1)]

    def waiting(n: int, priority: Priority = Priority.MEDIUM) -> NewTask:
        return NewTask(
            title=f"waits {n}", kind="progressing", payload={"key": keys[n]}, priority=priority
        )

    try:
        async with _relay(settings) as (relay, broker):
            # Low, so that the worker's messages claim the backlog's tasks before it.
            lost = await _lost(store, waiting(0, Priority.LOW))
            backlog = await _created(store, [waiting(n) for n in range(1, len(keys))])
            while await relay.relay_once():
                pass
            async with running_worker(settings):
                slots = settings.worker_concurrency
                await _until(lambda: _counts(store, broker), (slots, len(backlog) - 2 * slots))
                await asyncio.sleep(STALE + 0.2)

                assert await relay.resend_lost() == 1
                assert not await _queued(settings, lost)
                assert await relay.relay_once() == 1
                assert await _counts(store, broker) == (slots, len(backlog) - 2 * slots + 1)
                await asyncio.sleep(STALE + 0.2)
                assert await relay.resend_lost() == 0
                for key in keys:
                    kinds.release.setdefault(key, asyncio.Event()).set()
                await _until(lambda: _done(store, [lost, *backlog]), True, timeout=30)
    finally:
        for key in keys:
            kinds.release.pop(key, None)


async def _counts(store: SqlTaskStore, broker: Broker) -> tuple[int, int]:
    """(tasks running, messages waiting in the broker)."""
    return await store.count_in_progress(), await broker.ready_messages()


async def _done(store: SqlTaskStore, ids: list[uuid.UUID]) -> bool:
    statuses = [(await store.get(task_id)).status for task_id in ids]
    return statuses == [Status.COMPLETED] * len(ids)


async def _until(read: object, expected: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await read()) != expected:  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{seen} != {expected}"
        await asyncio.sleep(0.05)
