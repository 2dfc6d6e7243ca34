"""Workers that die, drain, or run longer than the broker's consumer timeout."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable

import aio_pika
import pytest

from services.core.settings import Settings
from tests.support.processes import start_worker_process, worker_log
from tests.support.rabbit import PrivateRabbit
from tests.support.services import running_api, running_worker, submit, wait_for


async def _exit_code(process: subprocess.Popen[str], timeout: float = 30) -> int:
    return await asyncio.to_thread(process.wait, timeout)


async def test_a_killed_worker_s_task_is_completed_by_another_after_the_lease(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"lease_seconds": 2.0})
    async with running_api(settings) as api:
        doomed = start_worker_process(settings)
        try:
            task = await submit(api, kind="sleep", payload={"seconds": 1.0})
            await wait_for(api, task["id"], {"IN_PROGRESS"}, timeout=30)
        finally:
            doomed.send_signal(signal.SIGKILL)
            await _exit_code(doomed)
        async with running_worker(settings):
            final = await wait_for(api, task["id"], timeout=30)
    assert (final["status"], final["attempts"], final["result"]) == ("COMPLETED", 2, {"slept": 1.0})


async def test_sigterm_lets_held_tasks_finish_and_exits_0(settings: Settings) -> None:
    async with running_api(settings) as api:
        worker = start_worker_process(settings)
        task = await submit(api, kind="sleep", payload={"seconds": 1.0})
        await wait_for(api, task["id"], {"IN_PROGRESS"}, timeout=30)
        worker.send_signal(signal.SIGTERM)
        after = await submit(api, kind="noop")  # a draining worker takes no more work
        assert await _exit_code(worker) == 0, worker_log(worker)
        final = (await api.get(f"/api/v1/tasks/{task['id']}")).json()
        assert (final["status"], final["attempts"]) == ("COMPLETED", 1)
        assert (await api.get(f"/api/v1/tasks/{after['id']}")).json()["status"] == "PENDING"


async def test_sigterm_hands_back_what_outlasts_the_grace_period(settings: Settings) -> None:
    short = settings.model_copy(update={"drain_seconds": 0.3})
    async with running_api(settings) as api:
        worker = start_worker_process(short)
        task = await submit(api, kind="sleep", payload={"seconds": 2.0})
        await wait_for(api, task["id"], {"IN_PROGRESS"}, timeout=30)
        worker.send_signal(signal.SIGTERM)
        assert await _exit_code(worker) == 0
        handed_back = (await api.get(f"/api/v1/tasks/{task['id']}")).json()
        assert (handed_back["status"], handed_back["attempts"]) == ("PENDING", 0)
        async with running_worker(settings):
            final = await wait_for(api, task["id"], timeout=30)
        assert (final["status"], final["attempts"]) == ("COMPLETED", 1)


@pytest.mark.private_broker
async def test_a_task_longer_than_the_consumer_timeout_completes(
    settings: Settings, private_rabbit: Callable[..., PrivateRabbit]
) -> None:
    rabbit = private_rabbit(consumer_timeout_ms=1000)
    await asyncio.to_thread(rabbit.start)
    settings = settings.model_copy(update={"amqp_url": rabbit.url})
    control = await _unacked_consumer_is_closed(rabbit.url)
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="sleep", payload={"seconds": 5})
        final = await wait_for(api, task["id"], timeout=30)
    assert (final["status"], final["attempts"]) == ("COMPLETED", 1)
    assert await control, "the node must enforce its consumer timeout for this to mean much"


async def _unacked_consumer_is_closed(url: str) -> asyncio.Task[bool]:
    """A consumer that holds a message unacked: the node closes its channel."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    queue = await channel.declare_queue(
        "control", arguments={"x-queue-type": "quorum"}, durable=True
    )
    await channel.default_exchange.publish(aio_pika.Message(b"held"), "control")
    closed = asyncio.Event()
    channel.close_callbacks.add(lambda *_: closed.set())

    async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        pass  # never acked

    await queue.consume(hold)

    async def wait() -> bool:
        try:
            await asyncio.wait_for(closed.wait(), 20)
            return True
        except TimeoutError:
            return False
        finally:
            await connection.close()

    return asyncio.create_task(wait())
