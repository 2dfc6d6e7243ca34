"""POST /api/v1/tasks:batch: many tasks in one request, each answered on its own."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

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
    assert earlier["id"] not in {item["task"]["id"] for item in items if "task" in item}


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


def _keyed(keys: list[str]) -> dict[str, Any]:
    return {"tasks": [{"title": "t", "kind": "noop", "idempotency_key": key} for key in keys]}


# A task of the tenant "default" with the key $1, written as another client would.
_INSERT_KEYED = (
    "INSERT INTO tasks (id, tenant, queue, title, description, priority, status, kind, "
    "payload, attempts, max_attempts, cancel_requested, created_at, updated_at, "
    "available_at, idempotency_key, request_hash) VALUES (gen_random_uuid(), 'default', "
    "'default', 'other', '', 2, 'NEW', 'noop', '{}', 0, 3, false, now(), now(), now(), $1, "
    "'other')"
)


async def _connect(api: httpx.AsyncClient, settings: Settings) -> asyncpg.Connection:
    """A connection of another client. A task is stored first: the test's recorder of
    status moves then has the insertion's row, and the other client holds no lock on it."""
    await submit(api, kind="noop")
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    return await asyncpg.connect(dsn.render_as_string(hide_password=False))


async def _until_waiting(connection: asyncpg.Connection, statements: int) -> None:
    """Return once `statements` statements of the database wait for a lock."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND cardinality(pg_blocking_pids(pid)) > 0"
    )
    while await connection.fetchval(query) < statements:
        await asyncio.sleep(0.01)


async def test_concurrent_batches_with_the_same_keys_in_opposite_orders_both_succeed(
    api: httpx.AsyncClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    keys = sorted(uuid.uuid4().hex for _ in range(20))
    holder = await _connect(api, settings)
    try:
        # Another client holds the middle key: both batches run up to it, then on at once.
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(_INSERT_KEYED, keys[10])
        batches = [
            asyncio.create_task(api.post(BATCH, json=_keyed(order))) for order in (keys, keys[::-1])
        ]
        await _until_waiting(holder, 2)
        await transaction.rollback()
        one, other = await asyncio.gather(*batches)
    finally:
        await holder.close()
    assert (one.status_code, other.status_code) == (200, 200), (one.text, other.text)
    ids = [item["task"]["id"] for item in one.json()["items"]]
    assert [item["task"]["id"] for item in other.json()["items"]] == ids[::-1]
    assert one.json()["created"] + other.json()["created"] == len(keys)
    # Both took the keys in one order: neither waited for the other in a cycle.
    assert "lock conflict" not in caplog.text


async def test_a_batch_aborted_by_a_deadlock_is_run_again(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    """Another client holds one key and then asks for the batch's other one: PostgreSQL
    aborts the batch's statement, which runs again once that client is gone."""
    holder = await _connect(api, settings)
    try:
        for _ in range(3):  # should the other client be the one aborted: again
            first, second = sorted(uuid.uuid4().hex for _ in range(2))
            transaction = holder.transaction()
            await transaction.start()
            # Only the batch's backend looks for the deadlock (after its deadlock_timeout).
            await holder.execute("SET LOCAL deadlock_timeout = '60s'")
            await holder.execute(_INSERT_KEYED, second)
            batch = asyncio.create_task(api.post(BATCH, json=_keyed([first, second])))
            await _until_waiting(holder, 1)
            try:
                await holder.execute(_INSERT_KEYED, first)  # a cycle: the batch is aborted
            except asyncpg.DeadlockDetectedError:
                await transaction.rollback()
                await batch
                continue
            await transaction.rollback()
            response = await batch
            assert response.status_code == 200, response.text
            assert response.json()["created"] == 2
            return
        pytest.fail("the batch's statement was never the one aborted")
    finally:
        await holder.close()


@pytest.mark.parametrize(
    ("task", "times"),
    [({}, 16), ("x", 16), ({"title": "t", "kind": "nope"}, 2)],
    ids=["empty", "not-an-object", "unknown-kind"],
)
async def test_refusals_stay_a_small_multiple_of_the_request(
    api: httpx.AsyncClient, store: SqlTaskStore, task: Any, times: int
) -> None:
    body = json.dumps({"tasks": [task] * 1000}, separators=(",", ":"))
    response = await api.post(BATCH, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.content) <= times * len(body), (len(response.content), len(body))
    answer = response.json()
    assert (answer["refused"], answer["more_problems"]) == (1000, 1000 - 20)
    assert [item["outcome"] for item in answer["items"]] == ["refused"] * 1000
    assert {item["status"] for item in answer["items"]} == {422}
    listed = [item["problem"] for item in answer["items"] if "problem" in item]
    assert len(listed) == 20  # the first ones, each naming its task and field
    assert all(p["errors"][0]["loc"][:3] == ["body", "tasks", n] for n, p in enumerate(listed))
    assert await _all(store) == []
