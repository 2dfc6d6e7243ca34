"""One tenant's flood of heavy requests against another tenant's single request, on the real
API: the flood waits in its own tenant's line, so the other tenant is answered at once."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from services.core.auth import parse_scopes
from services.core.db.keys import SqlKeyStore
from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask, TaskFilter
from services.core.settings import Settings
from tests.support.database import connect, until_a_lock_waiter
from tests.support.services import running_api
from tests.support.store import create

FLOOD = 100
HEAVY = "/api/v1/tasks?limit=100"
# A correctness bound with a wide margin (answered at once is milliseconds), not a benchmark.
PATIENCE = 1.0


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    """Keys on and cached as in production, no rate limit in the way, no relay; a tenant
    holds at most half of the pool, as the default holds 8 of 10."""
    assert settings.database_pool_size == 4
    return settings.model_copy(
        update={
            "auth_enabled": True,
            "auth_cache_seconds": 5.0,
            "rate_limit": "",
            "api_run_relay": False,
            "tenant_max_requests": 2,
        }
    )


async def _heavy_tasks(store: SqlTaskStore, tenant: str) -> None:
    """A full page of tasks with large payloads: each listing of them takes real work."""
    payload = {f"field{n}": "x" * 200 for n in range(150)}
    for n in range(100):
        await create(store, NewTask(f"heavy {n}", payload=payload), tenant=tenant)


def _client(api: httpx.AsyncClient, key: str) -> httpx.AsyncClient:
    """A client of its own, so that neither tenant waits for the other's connections."""
    return httpx.AsyncClient(
        base_url=api.base_url,
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        limits=httpx.Limits(max_connections=FLOOD + 10),
    )


async def test_a_tenants_flood_does_not_hold_up_another_tenants_request(
    keyed: Settings, keys: SqlKeyStore, store: SqlTaskStore
) -> None:
    await _heavy_tasks(store, "bob")
    alice_key, _ = await keys.create("alice", parse_scopes("read"))
    bob_key, _ = await keys.create("bob", parse_scopes("read"))

    async with (
        running_api(keyed) as api,
        _client(api, alice_key) as alice,
        _client(api, bob_key) as bob,
    ):
        assert (await alice.get("/api/v1/tasks")).status_code == 200  # alice's key is cached
        flood = [asyncio.create_task(bob.get(HEAVY)) for _ in range(FLOOD)]
        await asyncio.wait(flood, return_when=asyncio.FIRST_COMPLETED)
        started = time.monotonic()
        answer = await alice.get("/api/v1/tasks")
        waited = time.monotonic() - started
        in_flight = sum(not request.done() for request in flood)
        answers = await asyncio.gather(*flood)

    assert answer.status_code == 200, answer.text
    assert in_flight > 0, "the flood was over before alice asked"
    assert waited < PATIENCE, f"alice waited {waited:.2f} s behind bob's flood"
    assert {a.status_code for a in answers} <= {200, 503}, [a.text for a in answers]
    assert all(a.headers["retry-after"] == "1" for a in answers if a.status_code == 503)
    refused = [a.json()["type"] for a in answers if a.status_code == 503]
    assert set(refused) <= {"urn:conveyor:problem:tenant-busy"}


async def test_a_full_database_pool_answers_503_with_retry_after_and_stores_nothing(
    settings: Settings, store: SqlTaskStore
) -> None:
    """One connection, held by a listing that waits on a lock: the next request waits for
    the pool's time (5 s) and gets 503 + Retry-After, not 500; nothing it asked is stored."""
    one = settings.model_copy(
        update={
            "database_pool_size": 1,
            "tenant_max_requests": 10,
            "api_run_relay": False,
            "api_run_recovery": False,
            "api_run_retention": False,  # no loop may take the one connection
        }
    )
    async with running_api(one) as api:
        holder = await connect(one.database_url)
        try:
            async with holder.transaction():
                await holder.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
                listing = asyncio.create_task(api.get("/api/v1/tasks"))
                await until_a_lock_waiter(holder)
                refused = await api.post(
                    "/api/v1/tasks", json={"title": "waits for the pool"}, timeout=30
                )
            assert (await listing).status_code == 200
        finally:
            await holder.close()
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"]
    assert (await store.page(TaskFilter(), 10)).items == []
