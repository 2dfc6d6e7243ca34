"""Keys under concurrency, on the real API: the per-tenant limit holds however many ask at
once, valid keys are never refused for the lookup limit, and revocations still arrive in time."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from services.core.auth import parse_scopes
from services.core.db.keys import SqlKeyStore
from services.core.settings import Settings
from tests.support.services import running_api

CACHE_SECONDS = 0.3
# Small, so that concurrent misses of a few keys, or a short flood, go past it.
LOOKUP_LIMIT = "20/second"


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    """Keys on, a small lookup limit, a short cache; no rate limit or tenant cap in the way."""
    return settings.model_copy(
        update={
            "auth_enabled": True,
            "auth_cache_seconds": CACHE_SECONDS,
            "auth_lookup_limit": LOOKUP_LIMIT,
            "rate_limit": "",
            "tenant_max_requests": 1000,
            "api_run_relay": False,
        }
    )


@pytest.fixture
async def api(keyed: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real API, and a client that may open as many connections as a test sends."""
    async with (
        running_api(keyed) as started,
        httpx.AsyncClient(
            base_url=started.base_url, timeout=30, limits=httpx.Limits(max_connections=300)
        ) as client,
    ):
        yield client


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _made_up() -> str:
    return f"cvk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


async def test_parallel_creations_stop_at_the_tenants_limit(
    api: httpx.AsyncClient, keys: SqlKeyStore, keyed: Settings
) -> None:
    admin, _ = await keys.create("alice", parse_scopes("admin"))
    for _ in range(keyed.max_keys_per_tenant - 6):
        await keys.create("alice", parse_scopes("read"))
    await keys.revoke((await keys.create("alice", parse_scopes("read")))[1].id)

    made = await asyncio.gather(
        *[
            api.post("/api/v1/keys", json={"scopes": ["read"]}, headers=_bearer(admin))
            for _ in range(60)
        ]
    )

    in_use = [k for k in await keys.of_tenant("alice") if k.revoked_at is None]
    assert len(in_use) == keyed.max_keys_per_tenant
    assert Counter(m.status_code for m in made) == {201: 5, 409: 55}


async def test_concurrent_first_uses_of_a_few_keys_are_all_answered(
    api: httpx.AsyncClient, keys: SqlKeyStore
) -> None:
    made = [(await keys.create(f"team-{n}", parse_scopes("read")))[0] for n in range(5)]

    # 100 first uses at once: five times the lookup limit, were they not shared per key.
    answers = await asyncio.gather(
        *[api.get("/api/v1/tasks?limit=1", headers=_bearer(made[n % 5])) for n in range(100)]
    )

    refused = {a.json()["detail"] for a in answers if a.status_code != 200}
    assert Counter(a.status_code for a in answers) == {200: 100}, refused


async def _flood(api: httpx.AsyncClient, stop: asyncio.Event, seen: Counter[int]) -> None:
    """Made-up keys, one after another until `stop`: more lookups than the limit allows."""
    while not stop.is_set():
        seen[(await api.get("/api/v1/tasks", headers=_bearer(_made_up()))).status_code] += 1


async def _flooded(api: httpx.AsyncClient, use: Callable[[], Awaitable[None]]) -> Counter[int]:
    """Run `use` while twenty clients flood the lookups; answer what the flood got."""
    stop, seen = asyncio.Event(), Counter[int]()
    flood = [asyncio.create_task(_flood(api, stop, seen)) for _ in range(20)]
    try:
        while seen[503] == 0:  # the lookup limit is spent
            await asyncio.sleep(0.01)
        await use()
    finally:
        stop.set()
        await asyncio.gather(*flood)
    return seen


async def test_a_key_in_use_is_never_refused_while_made_up_keys_flood_the_lookups(
    api: httpx.AsyncClient, keys: SqlKeyStore
) -> None:
    key, _ = await keys.create("alice", parse_scopes("read"))
    assert (await api.get("/api/v1/tasks", headers=_bearer(key))).status_code == 200
    answers = Counter[int]()

    async def use_through_several_expiries() -> None:
        # Through five cache periods, and six uses at least however slow the machine.
        until = time.monotonic() + 5 * CACHE_SECONDS
        while time.monotonic() < until or answers.total() < 6:
            answers[(await api.get("/api/v1/tasks", headers=_bearer(key))).status_code] += 1

    flood = await _flooded(api, use_through_several_expiries)

    assert set(answers) == {200}, answers
    assert flood[503] > 0, "the flood never spent the lookup limit"


async def test_a_key_revoked_in_the_database_is_refused_within_the_cache_time_under_a_flood(
    api: httpx.AsyncClient, keys: SqlKeyStore
) -> None:
    key, stored = await keys.create("alice", parse_scopes("read"))
    assert (await api.get("/api/v1/tasks", headers=_bearer(key))).status_code == 200
    answers: list[tuple[float, int]] = []

    async def revoke_while_in_use() -> None:
        await keys.revoke(stored.id)
        revoked = time.monotonic()
        while time.monotonic() < revoked + 3 * CACHE_SECONDS:
            started = time.monotonic() - revoked
            answers.append(
                (started, (await api.get("/api/v1/tasks", headers=_bearer(key))).status_code)
            )

    await _flooded(api, revoke_while_in_use)

    assert {status for _, status in answers} <= {200, 401}, answers
    assert all(status == 401 for started, status in answers if started > CACHE_SECONDS)
    assert answers[-1][1] == 401
