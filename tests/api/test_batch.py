"""POST /api/v1/tasks:batch: many tasks in one request, each answered on its own."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from services.core.db.store import SqlTaskStore
from services.core.domain import TaskFilter
from services.core.settings import Settings
from services.worker.main import open_worker
from tests.support.services import submit

BATCH = "/api/v1/tasks:batch"


async def _all(store: SqlTaskStore) -> list[Any]:
    return (await store.page(TaskFilter(), 100)).items


async def test_each_task_is_answered_in_order_and_a_refusal_refuses_only_itself(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    key, other = uuid.uuid4().hex, uuid.uuid4().hex
    earlier = await submit(api, kind="echo", payload={"n": 0}, title="earlier")
    await api.post(
        "/api/v1/tasks",
        json={"title": "keyed", "kind": "echo"},
        headers={"Idempotency-Key": key},
    )
    tasks: list[Any] = [
        {"title": "first", "kind": "echo", "payload": {"n": 1}},
        {"kind": "echo"},  # no title
        {"title": "x", "kind": "nope"},  # unknown kind
        {"title": "keyed", "kind": "echo", "idempotency_key": key},  # a repeat
        {"title": "changed", "kind": "echo", "idempotency_key": key},  # same key, new body
        {"title": "twice", "kind": "noop", "idempotency_key": other},
        {"title": "twice", "kind": "noop", "idempotency_key": other},  # repeated in the batch
        "not an object",
        {"title": "last", "priority": "HIGH", "kind": "noop"},
    ]
    response = await api.post(BATCH, json={"tasks": tasks})
    assert response.status_code == 200, response.text
    body = response.json()
    outcomes = [(item["outcome"], item["status"]) for item in body["items"]]
    assert outcomes == [
        ("created", 201),
        ("refused", 422),
        ("refused", 422),
        ("repeated", 200),
        ("refused", 409),
        ("created", 201),
        ("repeated", 200),
        ("refused", 422),
        ("created", 201),
    ]
    assert (body["created"], body["repeated"], body["refused"]) == (3, 2, 4)
    items = body["items"]
    assert items[1]["problem"]["errors"][0]["loc"] == ["body", "tasks", 1, "title"]
    assert items[2]["problem"]["errors"][0]["loc"] == ["body", "tasks", 2, "kind"]
    assert items[4]["problem"]["type"] == "urn:conveyor:problem:idempotency-key-reused"
    assert items[5]["task"]["id"] == items[6]["task"]["id"]
    assert items[0]["task"]["payload"] == {"n": 1} and items[8]["task"]["priority"] == "HIGH"
    stored = {task.title for task in await _all(store)}
    assert stored == {"earlier", "keyed", "first", "twice", "last"}
    assert earlier["id"] not in {item["task"]["id"] for item in items if item["task"]}


async def test_a_bad_envelope_is_refused_whole_and_stores_nothing(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    many = {"tasks": [{"title": "t", "kind": "noop"}] * 1001}
    for body, field in (
        (many, ["body", "tasks"]),
        ({"tasks": []}, ["body", "tasks"]),
        ({"items": []}, ["body", "tasks"]),
    ):
        response = await api.post(BATCH, json=body)
        assert response.status_code == 422, response.text
        assert field in [e["loc"][:2] for e in response.json()["errors"]]
    assert await _all(store) == []


async def test_a_batch_runs_like_single_submits(settings: Settings, api: httpx.AsyncClient) -> None:
    tasks = [{"title": f"t{n}", "kind": "echo", "payload": {"n": n}} for n in range(50)]
    answered = (await api.post(BATCH, json={"tasks": tasks})).json()
    assert answered["created"] == 50
    async with open_worker(settings) as worker:
        await worker.run_until_idle()
    for n, item in enumerate(answered["items"]):
        task = (await api.get(f"/api/v1/tasks/{item['task']['id']}")).json()
        assert (task["status"], task["result"]) == ("COMPLETED", {"n": n})
