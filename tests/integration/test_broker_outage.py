"""RabbitMQ away at submit time, and restarted later: no task is lost, nobody steps in.

Runs a private RabbitMQ node on its own ports; the shared one is never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from services.core.settings import Settings
from tests.support.rabbit import PrivateRabbit
from tests.support.services import running_api, running_worker, submit, wait_for

pytestmark = pytest.mark.private_broker


async def test_a_task_submitted_while_rabbitmq_is_down_completes_once_it_is_back(
    settings: Settings, private_rabbit: Callable[..., PrivateRabbit]
) -> None:
    rabbit = private_rabbit()
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
