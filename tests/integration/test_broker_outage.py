"""RabbitMQ away at submit time, and restarted later: no task is lost, nobody steps in.

Runs a private RabbitMQ node on its own ports; the shared one is never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.core.settings import Settings
from tests.conftest import CI
from tests.support.rabbit import PrivateRabbit, rabbitmq_available
from tests.support.services import free_port, running_api, running_worker, submit, wait_for

pytestmark = pytest.mark.private_broker


@pytest.fixture
async def rabbit() -> AsyncIterator[PrivateRabbit]:
    if not rabbitmq_available():
        (pytest.fail if CI else pytest.skip)("rabbitmq-server is not installed")
    port = free_port()
    while port + 20000 > 65535:
        port = free_port()
    node = PrivateRabbit(port)
    yield node
    await asyncio.to_thread(node.destroy)


async def test_a_task_submitted_while_rabbitmq_is_down_completes_once_it_is_back(
    settings: Settings, rabbit: PrivateRabbit
) -> None:
    settings = settings.model_copy(update={"amqp_url": rabbit.url})
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="echo", payload={"n": 1})
        assert task["status"] == "NEW"
        await asyncio.sleep(1.0)
        assert (await api.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "NEW"
        ready = await api.get("/health/ready")
        assert ready.status_code == 503 and "rabbitmq" in ready.json()["detail"]

        await asyncio.to_thread(rabbit.start)
        final = await wait_for(api, task["id"], timeout=30)
        assert (final["status"], final["result"]) == ("COMPLETED", {"n": 1})

        # A restart of the broker later on heals too: both sides reconnect by themselves.
        await asyncio.to_thread(rabbit.stop)
        during = await submit(api, kind="echo", payload={"n": 2})
        await asyncio.to_thread(rabbit.start)
        after = await submit(api, kind="echo", payload={"n": 3})
        for task_id in (during["id"], after["id"]):
            assert (await wait_for(api, task_id, timeout=30))["status"] == "COMPLETED"
