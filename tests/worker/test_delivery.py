"""Duplicate and stale messages run nothing; user kinds run like built-in ones."""

from __future__ import annotations

import uuid

from services.core.amqp.broker import Broker
from services.core.amqp.topology import Topology
from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask
from services.core.settings import Settings
from services.worker.main import open_worker
from tests.support import kinds
from tests.support.services import register_kinds, running_api, running_worker, submit, wait_for
from tests.support.store import create


async def _publish(settings: Settings, *task_ids: uuid.UUID) -> None:
    broker = Broker(settings.amqp_url, Topology(settings.amqp_prefix))
    broker.start()
    await broker.connected.wait()
    try:
        for task_id in task_ids:
            await broker.publish({task_id: ("default", {})})
    finally:
        await broker.close()


async def test_the_same_message_delivered_twice_runs_the_handler_once(
    settings: Settings, store: SqlTaskStore
) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    key = uuid.uuid4().hex
    await register_kinds(settings)
    async with running_api(settings) as api:
        task = await submit(api, kind="count", payload={"key": key})
        await wait_for(api, task["id"], {"PENDING"})
        # Two more copies of its message, as a broker redelivery or a relay repeat would.
        await _publish(settings, uuid.UUID(task["id"]), uuid.UUID(task["id"]))
        async with open_worker(settings) as worker:
            await worker.run_until_idle()  # all three copies taken
            assert worker.held == 0
        final = (await api.get(f"/api/v1/tasks/{task['id']}")).json()
    assert (final["status"], final["result"], final["attempts"]) == ("COMPLETED", {"runs": 1}, 1)
    assert kinds.runs[key] == 1


async def test_a_message_for_a_cancelled_task_runs_nothing(settings: Settings) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    key = uuid.uuid4().hex
    await register_kinds(settings)
    async with running_api(settings) as api:
        task = await submit(api, kind="count", payload={"key": key})
        await wait_for(api, task["id"], {"PENDING"})
        assert (await api.delete(f"/api/v1/tasks/{task['id']}")).status_code == 200
        async with open_worker(settings) as worker:
            await worker.run_until_idle()
        final = (await api.get(f"/api/v1/tasks/{task['id']}")).json()
    assert final["status"] == "CANCELLED" and final["attempts"] == 0
    assert kinds.runs[key] == 0


async def test_a_queued_task_whose_message_was_lost_is_queued_again(
    settings: Settings, store: SqlTaskStore
) -> None:
    settings = settings.model_copy(update={"lost_message_seconds": 0.5})
    task, _ = await create(store, NewTask(title="orphan", kind="noop"))
    # Marked queued, but its message never reached the broker.
    await store.confirm_queued(list(await store.reserve_due(10)))
    async with running_api(settings) as api, running_worker(settings):
        final = await wait_for(api, str(task.id), timeout=10)
    assert (final["status"], final["attempts"]) == ("COMPLETED", 1)
