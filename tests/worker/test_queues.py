"""Queues: routing, workers per queue, limits held across workers, pause and resume."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest

from services.core.settings import QueueSettings, Settings
from services.worker.main import open_worker
from tests.support.services import register_kinds, running_api, running_worker, submit, wait_for


def _with_queues(settings: Settings, *queues: QueueSettings, **more: Any) -> Settings:
    return settings.model_copy(update={"queues": [QueueSettings(name="default"), *queues], **more})


def _taking(settings: Settings, *names: str) -> Settings:
    return settings.model_copy(update={"worker_queues": list(names)})


async def _times(api: httpx.AsyncClient, ids: list[str]) -> list[dict[str, Any]]:
    return [await wait_for(api, task_id, timeout=60) for task_id in ids]


def _at(task: dict[str, Any], field: str) -> datetime:
    return datetime.fromisoformat(task[field])


async def test_a_queue_no_worker_takes_waits_while_others_complete_then_completes(
    settings: Settings,
) -> None:
    settings = _with_queues(settings, QueueSettings(name="gpu"))
    async with running_api(settings) as api:
        gpu = await submit(api, kind="noop", queue="gpu")
        plain = await submit(api, kind="noop")
        assert (gpu["queue"], plain["queue"]) == ("gpu", "default")
        async with running_worker(_taking(settings, "default")) as worker:
            assert (await wait_for(api, plain["id"]))["status"] == "COMPLETED"
            await worker.idle()
            assert (await api.get(f"/api/v1/tasks/{gpu['id']}")).json()["status"] == "PENDING"
        async with running_worker(_taking(settings, "gpu")):
            assert (await wait_for(api, gpu["id"]))["status"] == "COMPLETED"


async def test_kinds_go_to_their_queue_and_listing_filters_by_queue(settings: Settings) -> None:
    settings = _with_queues(
        settings, QueueSettings(name="gpu"), task_modules=["tests.support.gpu_kinds"]
    )
    await register_kinds(settings)  # by a worker that ran once (a pool scaled to zero now)
    async with running_api(settings) as api:
        thumbnail = await submit(api, kind="thumbnail", payload={"image": "a.png"})
        elsewhere = await submit(api, kind="thumbnail", queue="default")  # the body decides
        await submit(api, kind="noop")
        listed = (await api.get("/api/v1/tasks", params={"queue": "gpu"})).json()["items"]
    assert thumbnail["queue"] == "gpu" and elsewhere["queue"] == "default"
    assert [task["id"] for task in listed] == [thumbnail["id"]]


async def test_an_undefined_queue_is_refused_naming_the_field(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/tasks", json={"title": "t", "kind": "noop", "queue": "gpu"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "queue"]
    assert "unknown queue 'gpu'" in response.json()["detail"]
    bad = await api.post("/api/v1/tasks", json={"title": "t", "kind": "noop", "queue": "No!"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "queue"]
    batch = await api.post("/api/v1/tasks:batch", json={"tasks": [{"title": "t", "queue": "gpu"}]})
    assert batch.json()["items"][0]["problem"]["errors"][0]["loc"] == ["body", "tasks", 0, "queue"]
    assert (await api.get("/api/v1/tasks")).json()["items"] == []


async def test_a_kind_on_an_undefined_queue_stops_the_worker_naming_both(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.gpu_kinds"]})
    with pytest.raises(ValueError, match="kind 'thumbnail' names queue 'gpu'"):
        async with open_worker(settings):
            pass


async def test_max_running_holds_across_three_workers(settings: Settings) -> None:
    settings = _with_queues(settings, QueueSettings(name="slow", max_running=2))
    slow = _taking(settings, "slow")
    async with running_api(settings) as api:
        ids = [
            (await submit(api, kind="sleep", queue="slow", payload={"seconds": 0.1}))["id"]
            for _ in range(30)
        ]
        async with running_worker(slow), running_worker(slow), running_worker(slow):
            tasks = await _times(api, ids)
    assert {task["status"] for task in tasks} == {"COMPLETED"}
    # At each start, how many ran: never more than two.
    spans = [(_at(task, "started_at"), _at(task, "finished_at")) for task in tasks]
    most = max(sum(s <= start < f for s, f in spans) for start, _ in spans)
    assert most == 2


async def test_a_rate_starts_no_more_than_it_allows_in_any_second(settings: Settings) -> None:
    settings = _with_queues(settings, QueueSettings(name="partner", rate=5))
    partner = _taking(settings, "partner")
    async with running_api(settings) as api:
        ids = [(await submit(api, kind="noop", queue="partner"))["id"] for _ in range(60)]
        async with running_worker(partner), running_worker(partner):
            await asyncio.sleep(10)
            tasks = [(await api.get(f"/api/v1/tasks/{i}")).json() for i in ids]
    starts = sorted(_at(task, "started_at") for task in tasks if task["started_at"])
    # Every window of one second, from each start: at most five starts in it.
    most = max(
        sum(0 <= (other - start).total_seconds() < 1 for other in starts) for start in starts
    )
    assert most <= 5
    assert 40 <= len(starts) <= 51  # it keeps going at its rate, and no faster


async def test_pause_holds_a_queue_while_another_drains_and_resume_releases_it(
    settings: Settings,
) -> None:
    settings = _with_queues(settings, QueueSettings(name="gpu"))
    async with running_api(settings) as api:
        paused = (await api.post("/api/v1/queues/gpu:pause")).json()
        assert paused["paused"] is True
        held = [(await submit(api, kind="noop", queue="gpu"))["id"] for _ in range(5)]
        free = [(await submit(api, kind="noop"))["id"] for _ in range(5)]
        async with running_worker(_taking(settings, "default", "gpu")):
            assert {t["status"] for t in await _times(api, free)} == {"COMPLETED"}
            await asyncio.sleep(0.5)
            gpu = await _queue(api, "gpu")
            assert gpu["paused"] and sum(gpu["queued"].values()) == 5 and gpu["running"] == 0
            assert (await api.post("/api/v1/queues/gpu:resume")).json()["paused"] is False
            assert {t["status"] for t in await _times(api, held)} == {"COMPLETED"}
        assert (await api.post("/api/v1/queues/nope:pause")).status_code == 404


async def _queue(api: httpx.AsyncClient, name: str) -> dict[str, Any]:
    listed = (await api.get("/api/v1/queues")).json()["items"]
    return next(queue for queue in listed if queue["name"] == name)
