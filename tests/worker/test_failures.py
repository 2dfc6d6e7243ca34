"""Retries with backoff, permanent failures, time limits and cancelling running tasks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from services.core.settings import Settings
from services.worker.runner import Worker
from tests.support import kinds
from tests.support.services import running_api, running_worker, submit, wait_for


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Worker]]:
    settings = settings.model_copy(
        update={
            "task_modules": ["tests.support.kinds"],
            "retry_base_seconds": 0.2,
            "retry_max_seconds": 10,
        }
    )
    async with running_api(settings) as api, running_worker(settings) as worker:
        yield api, worker


@pytest.fixture
def client(system: tuple[httpx.AsyncClient, Worker]) -> httpx.AsyncClient:
    return system[0]


async def test_retries_back_off_exponentially_then_succeed(client: httpx.AsyncClient) -> None:
    key = uuid.uuid4().hex
    task = await submit(client, kind="flaky", max_attempts=3, payload={"key": key, "failures": 2})
    final = await wait_for(client, task["id"])
    assert (final["status"], final["attempts"], final["result"]) == (
        "COMPLETED",
        3,
        {"attempts_seen": 3},
    )
    assert final["error"] == "failure 2"  # the last failed attempt's error stays readable
    first, second, third = kinds.attempt_times[key]
    # Backoff with jitter: after attempt n, between half and all of 0.2 * 2**(n-1) s.
    assert second - first >= 0.1
    assert third - second >= 0.2


async def test_a_permanent_failure_stops_at_once(client: httpx.AsyncClient) -> None:
    task = await submit(
        client, kind="fail", max_attempts=5, payload={"message": "bad", "retryable": False}
    )
    final = await wait_for(client, task["id"])
    assert (final["status"], final["attempts"], final["error"]) == ("FAILED", 1, "bad")


async def test_a_timed_out_attempt_fails_as_retryable(client: httpx.AsyncClient) -> None:
    task = await submit(
        client, kind="sleep", payload={"seconds": 30}, timeout_seconds=0.3, max_attempts=2
    )
    final = await wait_for(client, task["id"])
    assert (final["status"], final["attempts"]) == ("FAILED", 2)
    assert final["error"] == "timed out after 0.3 s"


async def test_a_kind_default_time_limit_applies_when_the_task_sets_none(
    client: httpx.AsyncClient,
) -> None:
    task = await submit(client, kind="slow_by_default", max_attempts=1)
    final = await wait_for(client, task["id"])
    assert (final["status"], final["error"]) == ("FAILED", "timed out after 0.2 s")


async def test_cancelling_a_running_task_stops_it_and_it_never_runs_again(
    system: tuple[httpx.AsyncClient, Worker],
) -> None:
    api, worker = system
    task = await submit(api, kind="sleep", payload={"seconds": 30}, max_attempts=5)
    await wait_for(api, task["id"], {"IN_PROGRESS"})
    response = await api.delete(f"/api/v1/tasks/{task['id']}")
    assert response.status_code == 202 and response.json()["cancel_requested"]
    final = await wait_for(api, task["id"], timeout=3)
    assert (final["status"], final["attempts"], final["result"]) == ("CANCELLED", 1, None)
    await worker.idle()  # every ticket of the queue taken, nothing running
    later = (await api.get(f"/api/v1/tasks/{task['id']}")).json()
    assert (later["status"], later["attempts"]) == ("CANCELLED", 1)
