"""GET /api/v1/workers: the platform scope only, a known queue only; and the workers'
gauges on /metrics."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.api.problems import ProblemType
from services.core.auth import parse_scopes
from services.core.db.keys import SqlKeyStore
from services.core.settings import Settings
from tests.support.services import running_api, running_worker


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_the_workers_are_the_platform_s_to_read_and_no_tenant_s(
    settings: Settings, keys: SqlKeyStore
) -> None:
    secured = settings.model_copy(update={"auth_enabled": True, "auth_cache_seconds": 0.0})
    admin, _ = await keys.create("team-a", parse_scopes("submit,read,cancel,admin"))
    platform, _ = await keys.create("ops", parse_scopes("platform"))
    async with running_api(secured) as api:
        refused = await api.get("/api/v1/workers", headers=_bearer(admin))
        allowed = await api.get("/api/v1/workers", headers=_bearer(platform))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == ProblemType.FORBIDDEN.uri
    assert "platform" in refused.json()["detail"]
    assert (allowed.status_code, allowed.json()) == (200, {"items": []})


async def test_an_unknown_queue_is_refused_naming_the_parameter(api: httpx.AsyncClient) -> None:
    answer = await api.get("/api/v1/workers", params={"queue": "nowhere"})
    assert answer.status_code == 422
    assert answer.json()["type"] == ProblemType.VALIDATION.uri
    assert answer.json()["errors"][0]["loc"] == ["query", "queue"]


async def _gauges(api: httpx.AsyncClient) -> dict[tuple[str, str, str], float]:
    """conveyor_workers and conveyor_queue_worker_slots, by name, queue and state."""
    text = (await api.get("/metrics")).text
    return {
        (sample.name, sample.labels["queue"], sample.labels.get("state", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("conveyor_workers", "conveyor_queue_worker_slots")
    }


async def _until_gauges(
    api: httpx.AsyncClient, expected: dict[tuple[str, str, str], float]
) -> None:
    """Scrape until the gauges read `expected` (they are read at most once a second)."""
    deadline = time.monotonic() + 15
    while (found := await _gauges(api)) != expected:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.2)


async def test_the_gauges_count_alive_workers_and_their_slots_per_queue(
    settings: Settings,
) -> None:
    async with running_api(settings) as api:
        async with running_worker(settings), running_worker(settings):
            await _until_gauges(
                api,
                {
                    ("conveyor_workers", "default", "alive"): 2,
                    ("conveyor_workers", "default", "draining"): 0,
                    ("conveyor_queue_worker_slots", "default", ""): 2 * settings.worker_concurrency,
                },
            )
        await _until_gauges(
            api,
            {
                ("conveyor_workers", "default", "alive"): 0,
                ("conveyor_workers", "default", "draining"): 0,
                ("conveyor_queue_worker_slots", "default", ""): 0,
            },
        )
