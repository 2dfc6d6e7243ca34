"""DELETE /api/v1/tasks/{id}: queued tasks cancel at once; terminal ones refuse."""

from __future__ import annotations

import uuid

import httpx

from services.core.db.store import SqlTaskStore
from tests.support.services import submit, wait_for
from tests.support.store import claim_one, complete_one


async def test_cancelling_a_queued_task_answers_200_cancelled(api: httpx.AsyncClient) -> None:
    task = await submit(api)
    response = await api.delete(f"/api/v1/tasks/{task['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    assert response.json()["finished_at"] is not None
    again = await api.delete(f"/api/v1/tasks/{task['id']}")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert (await api.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "CANCELLED"


async def test_cancelling_a_running_task_answers_202_and_asks_the_worker(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    task = await submit(api, kind="sleep", payload={"seconds": 30})
    await wait_for(api, task["id"], {"PENDING"})
    claim = await claim_one(store, "a-worker")
    assert claim is not None and str(claim.task.id) == task["id"]
    response = await api.delete(f"/api/v1/tasks/{task['id']}")
    assert response.status_code == 202
    assert response.json()["status"] == "IN_PROGRESS"
    assert response.json()["cancel_requested"] is True
    # The holder's result is refused: a cancelled task never becomes COMPLETED.
    assert await complete_one(store, claim, {"late": True}) == "CANCELLED"
    final = (await api.get(f"/api/v1/tasks/{task['id']}")).json()
    assert final["status"] == "CANCELLED" and final["result"] is None


async def test_cancelling_an_unknown_task_is_404(api: httpx.AsyncClient) -> None:
    assert (await api.delete(f"/api/v1/tasks/{uuid.uuid4()}")).status_code == 404


async def test_cancelling_with_a_malformed_id_is_422(api: httpx.AsyncClient) -> None:
    assert (await api.delete("/api/v1/tasks/42")).status_code == 422
