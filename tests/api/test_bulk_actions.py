"""POST /api/v1/tasks:cancel and :retry: every match of the filters, in batches."""

from __future__ import annotations

from services.core.settings import Settings
from services.worker.main import open_worker
from tests.support.database import fetch
from tests.support.services import running_api, running_worker, submit, wait_for


async def _counts(settings: Settings) -> dict[str, int]:
    rows = await fetch(
        settings.database_url, "SELECT status, count(*) AS n FROM tasks GROUP BY status"
    )
    return {row["status"]: row["n"] for row in rows}


async def test_a_bulk_cancel_of_ten_thousand_queued_tasks_leaves_none_queued_and_runs_none(
    settings: Settings,
) -> None:
    async with running_api(settings) as api:
        for _ in range(10):
            body = {"tasks": [{"title": "t", "kind": "noop"} for _ in range(1000)]}
            assert (await api.post("/api/v1/tasks:batch", json=body)).json()["created"] == 1000
        response = await api.post("/api/v1/tasks:cancel", json={})
        assert response.status_code == 200, response.text
        assert response.json() == {"changed": 10_000, "cancel_requested": 0}
        assert (await api.post("/api/v1/tasks:cancel", json={})).json()["changed"] == 0
    assert await _counts(settings) == {"CANCELLED": 10_000}
    async with open_worker(settings) as worker:  # every ticket is answered, no task runs
        await worker.run_until_idle()
    assert await _counts(settings) == {"CANCELLED": 10_000}
    attempts = await fetch(settings.database_url, "SELECT count(*) AS n FROM task_attempts")
    assert attempts[0]["n"] == 0


async def test_filters_choose_what_is_cancelled_and_running_tasks_are_asked_to_stop(
    settings: Settings,
) -> None:
    async with running_api(settings) as api:
        high = await submit(api, kind="noop", priority="HIGH")
        low = await submit(api, kind="noop", priority="LOW")
        echo = await submit(api, kind="echo", priority="LOW")
        answer = await api.post("/api/v1/tasks:cancel", json={"priority": ["LOW"], "kind": "noop"})
        assert answer.json() == {"changed": 1, "cancel_requested": 0}
        statuses = {t["id"]: t["status"] for t in (await api.get("/api/v1/tasks")).json()["items"]}
        assert statuses[low["id"]] == "CANCELLED"
        assert statuses[high["id"]] != "CANCELLED" and statuses[echo["id"]] != "CANCELLED"
        async with running_worker(settings):
            sleeper = await submit(api, kind="sleep", payload={"seconds": 30})
            await wait_for(api, sleeper["id"], {"IN_PROGRESS"})
            answer = await api.post("/api/v1/tasks:cancel", json={"kind": "sleep"})
            assert answer.json() == {"changed": 0, "cancel_requested": 1}
            assert (await wait_for(api, sleeper["id"]))["status"] == "CANCELLED"
        bad = await api.post("/api/v1/tasks:cancel", json={"status": ["DONE"]})
        assert bad.status_code == 422 and bad.json()["errors"][0]["loc"][:2] == ["body", "status"]


async def test_a_bulk_retry_runs_failed_tasks_again_and_a_repeat_changes_nothing(
    settings: Settings,
) -> None:
    async with running_api(settings) as api:
        async with running_worker(settings):
            failed = [
                await submit(api, kind="fail", payload={"retryable": False}) for _ in range(3)
            ]
            for task in failed:
                assert (await wait_for(api, task["id"]))["status"] == "FAILED"
        answer = await api.post("/api/v1/tasks:retry", json={"status": ["FAILED"]})
        assert answer.json() == {"changed": 3, "cancel_requested": 0}
        again = await api.post("/api/v1/tasks:retry", json={"status": ["FAILED"]})
        assert again.json()["changed"] == 0
        for task in failed:
            body = (await api.get(f"/api/v1/tasks/{task['id']}")).json()
            assert body["status"] == "PENDING" and body["error"] is None
