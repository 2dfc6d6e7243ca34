"""GET /api/v1/tasks/{id}?wait=: answered when the task finishes, woken by NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from services.core.auth import parse_scopes
from services.core.db.keys import SqlKeyStore
from services.core.db.migrate import upgrade
from services.core.db.schema import ensure_database
from services.core.settings import Settings
from tests.support.env import make_settings, unreachable
from tests.support.postgres import PrivatePostgres, postgres_available
from tests.support.services import free_port, running_api, running_worker, submit

WAIT = 60  # seconds a waiter may wait: far beyond the one-second task


async def test_two_hundred_waiters_on_two_api_processes_answer_when_the_task_finishes(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    async with running_api(settings) as one, running_api(settings) as two:
        task = await submit(one, kind="sleep", payload={"seconds": 1.0})
        url = f"/api/v1/tasks/{task['id']}"

        async def waiter(api: httpx.AsyncClient) -> dict[str, object]:
            response = await api.get(url, params={"wait": WAIT}, timeout=WAIT + 10)
            return dict(response.json())

        waiters = [asyncio.create_task(waiter((one, two)[n % 2])) for n in range(200)]
        await asyncio.sleep(0.5)  # every waiter is waiting before the task starts
        async with running_worker(settings):
            # Woken by the finish, not by their deadline: the gather ends long before it.
            # How soon after the finish is a figure of the bench (--only wait).
            answers = await asyncio.wait_for(asyncio.gather(*waiters), timeout=WAIT / 2)
    assert {body["status"] for body in answers} == {"COMPLETED"}


async def test_a_wait_ends_at_its_deadline_with_the_state_then(api: httpx.AsyncClient) -> None:
    task = await submit(api, kind="noop")
    started = time.monotonic()
    body = (await api.get(f"/api/v1/tasks/{task['id']}", params={"wait": 0.4})).json()
    assert body["status"] in {"NEW", "PENDING"} and time.monotonic() - started >= 0.4
    for bad in ("0", "61", "soon"):
        response = await api.get(f"/api/v1/tasks/{task['id']}", params={"wait": bad})
        assert response.status_code == 422 and response.json()["errors"][0]["loc"] == [
            "query",
            "wait",
        ]


async def test_waiters_past_the_limit_get_503_with_retry_after(settings: Settings) -> None:
    # One tenant (keys are off) may take every place: the process's limit is tested here.
    settings = settings.model_copy(update={"wait_max_waiters": 2, "wait_tenant_percent": 100})
    async with running_api(settings) as api:
        task = await submit(api, kind="noop")
        url = f"/api/v1/tasks/{task['id']}"
        held = [asyncio.create_task(api.get(url, params={"wait": 2})) for _ in range(2)]
        await asyncio.sleep(0.3)
        refused = await api.get(url, params={"wait": 2})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]


async def test_one_tenant_cannot_take_every_waiting_place(
    settings: Settings, keys: SqlKeyStore
) -> None:
    settings = settings.model_copy(
        update={"auth_enabled": True, "wait_max_waiters": 4, "wait_tenant_percent": 50}
    )
    greedy, other = [
        {"Authorization": f"Bearer {(await keys.create(tenant, parse_scopes('submit,read')))[0]}"}
        for tenant in ("greedy", "other")
    ]
    async with running_api(settings) as api:

        async def waiting(headers: dict[str, str], seconds: float) -> httpx.Response:
            body = {"title": "a task", "kind": "noop"}
            task = (await api.post("/api/v1/tasks", json=body, headers=headers)).json()
            url = f"/api/v1/tasks/{task['id']}"
            return await api.get(url, params={"wait": seconds}, headers=headers)

        greedys = [asyncio.create_task(waiting(greedy, 2)) for _ in range(4)]
        await asyncio.sleep(0.5)  # the greedy tenant asked for every place
        others = await waiting(other, 0.2)
        answers = sorted(await asyncio.gather(*greedys), key=lambda r: r.status_code)
    assert others.status_code == 200, others.text
    assert [r.status_code for r in answers] == [200, 200, 503, 503]
    for refused in answers[2:]:
        assert refused.json()["type"].endswith(":tenant-busy")
        assert refused.headers["Retry-After"] == "1"


async def test_a_waiting_request_leaves_its_tenants_place_to_others(settings: Settings) -> None:
    settings = settings.model_copy(update={"tenant_max_requests": 1})
    async with running_api(settings) as api:
        task = await submit(api, kind="noop")
        waiting = asyncio.create_task(api.get(f"/api/v1/tasks/{task['id']}", params={"wait": 2}))
        await asyncio.sleep(0.3)
        other = await api.get("/api/v1/tasks")  # the tenant's one place is free meanwhile
        assert other.status_code == 200 and not waiting.done()
        assert (await waiting).status_code == 200


# Waits through a database blip: a PostgreSQL of this module's own, cut off and restarted.
# Seconds after which every request of a test has read its task and waits.
SETTLED = 1.5


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    if not postgres_available():
        unreachable("a private PostgreSQL", FileNotFoundError("initdb is not installed"))
    postgres = PrivatePostgres(free_port())
    try:
        postgres.start()
        url = postgres.url("conveyor")
        asyncio.run(ensure_database(url))
        upgrade(url)
        yield postgres
    finally:
        postgres.destroy()


@dataclass
class Blip:
    postgres: PrivatePostgres
    settings: Settings

    async def fetch(self, sql: str) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.postgres.url("conveyor").replace("+asyncpg", ""))
        try:
            return await connection.fetch(sql)
        finally:
            await connection.close()

    async def listener(self, other_than: int | None = None) -> int:
        """The backend of the API's LISTEN connection (another than `other_than`), once
        there is one."""
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    rows = await self.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND query LIKE 'LISTEN %'"
                    )
                    pids = [row["pid"] for row in rows if row["pid"] != other_than]
                    if pids:
                        return int(pids[0])
                await asyncio.sleep(0.05)

    async def cancel(self, api: httpx.AsyncClient, task_id: str) -> None:
        """Cancel it, retrying while the API answers 503 (its pool's connections were cut)."""
        async with asyncio.timeout(30):
            while (response := await api.delete(f"/api/v1/tasks/{task_id}")).status_code == 503:
                await asyncio.sleep(0.1)
        assert response.status_code == 200, response.text


@pytest.fixture
async def blip(private_postgres: PrivatePostgres, amqp_prefix: str) -> AsyncIterator[Blip]:
    """Settings on the private PostgreSQL, emptied; nothing published, tasks stay NEW."""
    url = private_postgres.url("conveyor")
    settings = make_settings(url, amqp_prefix, api_run_relay=False, api_publish=False)
    current = Blip(private_postgres, settings)
    await current.fetch("TRUNCATE tasks, task_attempts, attempt_logs")
    yield current


async def _timed_wait(
    api: httpx.AsyncClient, task_id: str, seconds: float
) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = await api.get(f"/api/v1/tasks/{task_id}", params={"wait": seconds}, timeout=90)
    return time.monotonic() - started, response


async def test_waits_outlive_a_reset_of_every_database_connection(blip: Blip) -> None:
    async with running_api(blip.settings) as api:
        tasks = [(await submit(api, kind="noop"))["id"] for _ in range(4)]
        listener = await blip.listener()
        waiting = [asyncio.create_task(_timed_wait(api, tasks[n % 4], 30)) for n in range(40)]
        await asyncio.sleep(SETTLED)
        await blip.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await blip.listener(other_than=listener)  # listening again, on a new connection
        for task_id in tasks:
            await blip.cancel(api, task_id)
        answers = [response for _, response in await asyncio.gather(*waiting)]
    assert [response.status_code for response in answers] == [200] * 40
    assert {response.json()["status"] for response in answers} == {"CANCELLED"}


async def test_waits_outlive_a_restart_and_answer_503_only_if_it_is_not_back_by_their_end(
    blip: Blip,
) -> None:
    async with running_api(blip.settings) as api:
        finished, unfinished = [(await submit(api, kind="noop"))["id"] for _ in range(2)]
        await blip.listener()
        # Finished after the restart: answered then.
        woken = [asyncio.create_task(_timed_wait(api, finished, 40)) for _ in range(20)]
        # Ending once the database is back: answered then, with the task as it is.
        # (20 s: a restart on a loaded machine takes seconds, and it must be back by then.)
        ending = [asyncio.create_task(_timed_wait(api, unfinished, 20)) for _ in range(10)]
        # Ending while it is down: 503, but only at the end of the wait.
        failing = [asyncio.create_task(_timed_wait(api, unfinished, 3)) for _ in range(10)]
        await asyncio.sleep(SETTLED)
        await asyncio.to_thread(blip.postgres.stop)
        await asyncio.sleep(3)
        await asyncio.to_thread(blip.postgres.start)
        await blip.listener()
        await blip.cancel(api, finished)
        answers = await asyncio.gather(*woken, *ending, *failing)
    statuses = [(response.status_code, response.json().get("status")) for _, response in answers]
    assert statuses[:20] == [(200, "CANCELLED")] * 20
    assert statuses[20:30] == [(200, "NEW")] * 10
    assert statuses[30:] == [(503, 503)] * 10
    assert all(response.headers["Retry-After"] for _, response in answers[30:])
    assert all(took >= 3 for took, _ in answers[30:])
