"""The worker registry: a worker is listed from start to exit, says how busy it is and
whether it drains, reads gone once a killed one's lease passes, and never costs a lease."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx

from services.core.settings import QueueSettings, Settings
from services.core.version import VERSION
from services.worker.main import open_worker
from tests.support.database import execute
from tests.support.processes import start_worker_process, worker_log
from tests.support.services import running_api, running_worker, submit, wait_for

Worker = dict[str, Any]


async def _workers(api: httpx.AsyncClient, **params: str) -> list[Worker]:
    answer = await api.get("/api/v1/workers", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]  # type: ignore[no-any-return]


async def _until(
    api: httpx.AsyncClient, seen: Callable[[list[Worker]], bool], timeout: float = 15
) -> list[Worker]:
    """The workers listed, once `seen` holds of them; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        workers = await _workers(api)
        if seen(workers):
            return workers
        assert time.monotonic() < deadline, f"never seen; listed: {workers}"
        await asyncio.sleep(0.05)


def _running(worker_id: str, count: int) -> Callable[[list[Worker]], bool]:
    """Whether the worker `worker_id` is listed running `count` tasks."""
    return lambda workers: any(w["id"] == worker_id and w["running"] == count for w in workers)


def _ids(workers: list[Worker]) -> list[str]:
    return [worker["id"] for worker in workers]


async def test_a_started_worker_is_listed_with_its_queues_kinds_and_slots(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={
            "queues": [QueueSettings(name="default"), QueueSettings(name="gpu")],
            "worker_queues": ["default", "gpu"],
            "worker_concurrency": 3,
            "task_modules": ["tests.support.kinds"],
        }
    )
    async with running_api(settings) as api, running_worker(settings) as worker:
        (listed,) = await _until(api, lambda workers: len(workers) == 1)
    assert listed["id"] == worker.worker_id
    assert (listed["host"], listed["version"]) == (socket.gethostname(), VERSION)
    assert (listed["queues"], listed["concurrency"]) == (["default", "gpu"], 3)
    assert {"noop", "sleep", "count", "progressing"} <= set(listed["kinds"])
    assert listed["kinds"] == sorted(listed["kinds"])
    assert (listed["state"], listed["running"]) == ("alive", 0)
    assert listed["started_at"] <= listed["last_seen_at"]


async def test_workers_are_listed_by_id_and_filtered_by_queue(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"queues": [QueueSettings(name="default"), QueueSettings(name="gpu")]}
    )
    on_gpu = settings.model_copy(update={"worker_id": "worker-a", "worker_queues": ["gpu"]})
    on_default = settings.model_copy(update={"worker_id": "worker-b"})
    async with running_api(settings) as api:
        async with running_worker(on_default), running_worker(on_gpu):
            listed = await _until(api, lambda workers: len(workers) == 2)
            gpu = await _workers(api, queue="gpu")
            default = await _workers(api, queue="default")
    assert (_ids(listed), _ids(gpu), _ids(default)) == (
        ["worker-a", "worker-b"],
        ["worker-a"],
        ["worker-b"],
    )


async def test_the_running_count_follows_the_tasks_a_worker_runs(settings: Settings) -> None:
    async with running_api(settings) as api, running_worker(settings) as worker:
        task = await submit(api, kind="sleep", payload={"seconds": 1.5})
        await wait_for(api, task["id"], {"IN_PROGRESS"})
        await _until(api, _running(worker.worker_id, 1))
        await wait_for(api, task["id"])
        await _until(api, _running(worker.worker_id, 0))


async def test_a_draining_worker_says_so_and_is_gone_from_the_list_once_it_exits(
    settings: Settings,
) -> None:
    async with running_api(settings) as api:
        async with open_worker(settings) as worker:
            working = asyncio.create_task(worker.run())
            task = await submit(api, kind="sleep", payload={"seconds": 1.5})
            await wait_for(api, task["id"], {"IN_PROGRESS"})
            worker.stop()
            (draining,) = await _until(
                api, lambda workers: bool(workers) and workers[0]["state"] == "draining"
            )
            await working
        assert (draining["id"], draining["running"]) == (worker.worker_id, 1)
        assert (await wait_for(api, task["id"]))["status"] == "COMPLETED"
        assert await _workers(api) == []


async def test_a_killed_worker_reads_gone_once_its_lease_passes(settings: Settings) -> None:
    settings = settings.model_copy(update={"lease_seconds": 2.0, "worker_id": "doomed-1"})
    async with running_api(settings) as api:
        doomed = start_worker_process(settings)
        try:
            await _until(api, lambda workers: _ids(workers) == ["doomed-1"], timeout=60)
        finally:
            doomed.send_signal(signal.SIGKILL)
            await asyncio.to_thread(doomed.wait, 30)
        (gone,) = await _until(
            api, lambda workers: [w["state"] for w in workers] == ["gone"], timeout=30
        )
    assert gone["id"] == "doomed-1", worker_log(doomed)


async def test_a_long_gone_worker_s_row_is_deleted_by_another_s_heartbeat(
    settings: Settings,
) -> None:
    await execute(
        settings.database_url,
        "INSERT INTO workers (id, host, version, queues, kinds, concurrency, last_seen_at, "
        "expires_at) VALUES ('long-gone', 'h', 'v', '{default}', '{noop}', 1, "
        "now() - interval '2 hours', now() - interval '2 hours')",
    )
    async with running_api(settings) as api:
        assert [worker["state"] for worker in await _workers(api)] == ["gone"]
        async with running_worker(settings) as worker:
            listed = await _until(api, lambda workers: "long-gone" not in _ids(workers))
    assert _ids(listed) == [worker.worker_id]


async def test_a_failing_registry_costs_no_lease_and_no_liveness(settings: Settings) -> None:
    settings = settings.model_copy(update={"lease_seconds": 1.0})
    async with running_api(settings) as api, running_worker(settings) as worker:
        await _until(api, lambda workers: len(workers) == 1)
        await execute(settings.database_url, "ALTER TABLE workers RENAME TO workers_away")
        try:
            task = await submit(api, kind="sleep", payload={"seconds": 3})
            final = await wait_for(api, task["id"], timeout=30)
            failing = worker.supervisor.failing()
        finally:
            await execute(settings.database_url, "ALTER TABLE workers_away RENAME TO workers")
        await _until(api, _running(worker.worker_id, 0))  # its row kept up again
    # Three lease times long, and never handed back by the recovery sweep: renewed all along.
    assert (final["status"], final["attempts"]) == ("COMPLETED", 1)
    assert failing == []
