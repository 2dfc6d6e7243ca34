"""GET /api/v1/tasks/{id}/attempts: every attempt kept, with who ran it and how it ended."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx

from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask
from services.core.settings import Settings
from tests.support.services import running_api, running_worker, submit, wait_for
from tests.support.store import create, queue_and_claim


async def _attempts(api: httpx.AsyncClient, task_id: str) -> list[dict[str, object]]:
    response = await api.get(f"/api/v1/tasks/{task_id}/attempts")
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


async def test_a_task_that_failed_twice_then_succeeded_shows_three_attempts(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"task_modules": ["tests.support.kinds"], "worker_id": "pod-a"}
    )
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="flaky", payload={"key": uuid.uuid4().hex, "failures": 2})
        assert (await wait_for(api, task["id"]))["status"] == "COMPLETED"
        attempts = await _attempts(api, task["id"])
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    assert attempts[0]["error"] == "failure 1" and attempts[2]["error"] is None
    assert {a["worker_id"] for a in attempts} == {"pod-a"}
    for a in attempts:
        assert a["started_at"] <= a["finished_at"]  # type: ignore[operator]
        # Its duration is the time between its start and its end, to the microsecond.
        span = datetime.fromisoformat(a["finished_at"]) - datetime.fromisoformat(a["started_at"])  # type: ignore[arg-type]
        assert abs(a["duration_seconds"] - span.total_seconds()) < 1e-5  # type: ignore[operator]


async def test_a_timeout_a_cancel_and_the_running_attempt_are_shown(settings: Settings) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    async with running_api(settings) as api, running_worker(settings):
        timed = await submit(api, kind="slow_by_default", max_attempts=1)
        running = await submit(api, kind="sleep", payload={"seconds": 30})
        await wait_for(api, timed["id"])
        await wait_for(api, running["id"], {"IN_PROGRESS"})
        (now,) = await _attempts(api, running["id"])
        assert (now["outcome"], now["finished_at"], now["duration_seconds"]) == (
            "running",
            None,
            None,
        )
        await api.delete(f"/api/v1/tasks/{running['id']}")
        await wait_for(api, running["id"])
        (cancelled,) = await _attempts(api, running["id"])
        (timed_out,) = await _attempts(api, timed["id"])
    assert cancelled["outcome"] == "cancelled"
    assert timed_out["outcome"] == "timed_out" and "timed out" in timed_out["error"]  # type: ignore[operator]


async def test_a_lost_attempt_is_kept_when_recovery_takes_the_task_back(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    task, _ = await create(store, NewTask(title="t", kind="noop"))
    await queue_and_claim(store, worker="pod-gone")
    assert [r.id for r in await store.recover_worker("pod-gone")] == [task.id]
    (lost,) = await _attempts(api, str(task.id))
    assert (lost["outcome"], lost["worker_id"]) == ("lost", "pod-gone")
    assert "its worker is gone" in lost["error"]  # type: ignore[operator]
    assert (await api.get(f"/api/v1/tasks/{uuid.uuid4()}/attempts")).status_code == 404


async def test_a_rerun_of_a_failed_task_completes_with_its_history_kept(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    key = uuid.uuid4().hex
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="flaky", payload={"key": key, "failures": 2}, max_attempts=2)
        assert (await wait_for(api, task["id"]))["status"] == "FAILED"
        response = await api.post(f"/api/v1/tasks/{task['id']}:retry")
        assert response.status_code == 200, response.text
        assert (response.json()["id"], response.json()["status"]) == (task["id"], "PENDING")
        done = await wait_for(api, task["id"])
        attempts = await _attempts(api, task["id"])
        again = await api.post(f"/api/v1/tasks/{task['id']}:retry")
    assert (done["status"], done["attempts"], done["error"]) == ("COMPLETED", 3, None)
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "completed"]
    assert again.status_code == 409 and again.json()["type"].endswith("task-not-rerunnable")


async def test_a_rerun_of_a_cancelled_task_gets_a_fresh_budget(api: httpx.AsyncClient) -> None:
    task = await submit(api, kind="noop", max_attempts=1)
    await api.delete(f"/api/v1/tasks/{task['id']}")
    rerun = (await api.post(f"/api/v1/tasks/{task['id']}:retry")).json()
    assert (rerun["status"], rerun["cancel_requested"], rerun["finished_at"]) == (
        "PENDING",
        False,
        None,
    )
    assert (await api.post(f"/api/v1/tasks/{uuid.uuid4()}:retry")).status_code == 404
    pending = await api.post(f"/api/v1/tasks/{task['id']}:retry")
    assert pending.status_code == 409


async def test_a_rerun_of_a_task_scheduled_for_later_waits_for_its_time(
    settings: Settings, store: SqlTaskStore
) -> None:
    """A re-run is due at once, or at the task's scheduled time while that is still to come:
    cancelling a task planned for 2030 and running it again does not run it now."""
    async with running_api(settings) as api:
        later = await submit(api, kind="noop", scheduled_at="2030-01-01T00:00:00Z")
        past = await submit(api, kind="noop", scheduled_at="2020-01-01T00:00:00Z")
        for task in (later, past):
            await api.delete(f"/api/v1/tasks/{task['id']}")
        assert (await api.post(f"/api/v1/tasks/{later['id']}:retry")).status_code == 200
        bulk = await api.post("/api/v1/tasks:retry", json={"status": ["CANCELLED"]})
        assert bulk.status_code == 200, bulk.text
        async with running_worker(settings) as worker:
            ran = await wait_for(api, past["id"])
            await worker.idle()
        waiting = (await api.get(f"/api/v1/tasks/{later['id']}")).json()
    assert (ran["status"], ran["attempts"]) == ("COMPLETED", 1)
    assert (waiting["status"], waiting["attempts"]) == ("PENDING", 0)
    assert waiting["scheduled_at"] == "2030-01-01T00:00:00Z"
