"""What the console reads: who the caller is, its tasks per queue, title search, traces."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx

from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask, Priority
from services.core.settings import Settings
from tests.support.database import execute
from tests.support.services import running_api, running_worker, submit, wait_for
from tests.support.store import create


async def test_whoami_names_the_tenant_and_every_scope_when_keys_are_off(
    api: httpx.AsyncClient,
) -> None:
    assert (await api.get("/api/v1/whoami")).json() == {
        "tenant": "default",
        "key_id": None,
        "scopes": ["submit", "read", "cancel", "admin", "platform"],
        "auth_enabled": False,
    }


async def test_the_overview_counts_the_callers_ready_running_and_finished_tasks(
    settings: Settings, store: SqlTaskStore
) -> None:
    settings = settings.model_copy(
        update={"task_modules": ["tests.support.kinds"], "worker_concurrency": 1}
    )
    for _ in range(2):  # another tenant's tasks are not counted
        await create(store, NewTask("theirs", kind="noop"), tenant="other")
    async with running_api(settings) as api, running_worker(settings):
        done = [await submit(api, kind="noop") for _ in range(3)]
        failed = await submit(api, kind="fail", payload={"retryable": False})
        for task in [*done, failed]:
            await wait_for(api, task["id"])
        running = await submit(api, kind="sleep", payload={"seconds": 30})
        await wait_for(api, running["id"], {"IN_PROGRESS"})
        waiting = [  # the one slot is taken: these wait
            await submit(api, kind="noop", priority=priority)
            for priority in ("HIGH", "HIGH", "LOW")
        ]
        for task in waiting:  # ready once the broker has their messages (PENDING)
            await wait_for(api, task["id"], {"PENDING"})
        overview = (await api.get("/api/v1/overview")).json()
        await api.delete(f"/api/v1/tasks/{running['id']}")
    (default,) = [q for q in overview["queues"] if q["name"] == "default"]
    assert default["ready"] == {"HIGH": 2, "MEDIUM": 0, "LOW": 1}
    assert default["running"] == 1 and default["paused"] is False
    assert default["oldest_ready_seconds"] > 0  # three tasks wait, since before the read
    minutes = default["minutes"]
    assert len(minutes) == 15 and minutes == sorted(minutes, key=lambda m: m["at"])
    assert datetime.fromisoformat(minutes[-1]["at"]) <= datetime.now(UTC)
    totals = {what: sum(m[what] for m in minutes) for what in ("started", "completed", "failed")}
    assert totals == {"started": 5, "completed": 3, "failed": 1}
    assert overview["window_complete"] is True


async def test_a_title_search_takes_the_text_literally_and_in_any_case(
    api: httpx.AsyncClient,
) -> None:
    for title in ("Invoice 100% paid", "invoice 1000 paid", "INVOICE_7", "receipt"):
        await submit(api, title=title, kind="noop")

    async def titles(text: str) -> list[str]:
        page = (await api.get("/api/v1/tasks", params={"title": text})).json()
        return sorted(task["title"] for task in page["items"])

    assert await titles("invoice") == ["INVOICE_7", "Invoice 100% paid", "invoice 1000 paid"]
    assert await titles("100%") == ["Invoice 100% paid"]  # % is no wildcard
    assert await titles("e_7") == ["INVOICE_7"]  # nor is _
    assert await titles("nothing like it") == []
    refused = await api.get("/api/v1/tasks", params={"title": ""})
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["query", "title"]
    cancelled = await api.post("/api/v1/tasks:cancel", json={"title": "invoice 1"})
    assert cancelled.json()["changed"] == 2  # bulk actions take the same filter


async def test_a_tasks_trace_is_linked_from_its_stored_context(
    settings: Settings, store: SqlTaskStore
) -> None:
    settings = settings.model_copy(update={"trace_url": "https://tempo.example/t/{trace_id}"})
    task, _ = await create(store, NewTask("traced", kind="noop"))
    untraced, _ = await create(store, NewTask("untraced", kind="noop"))
    trace_id = uuid.uuid4().hex
    await execute(
        settings.database_url,
        "UPDATE tasks SET trace_context = $2 WHERE id = $1",
        task.id,
        json.dumps({"traceparent": f"00-{trace_id}-{'2' * 16}-01"}),
    )
    async with running_api(settings) as api:
        traced = (await api.get(f"/api/v1/tasks/{task.id}/trace")).json()
        assert traced == {"trace_id": trace_id, "url": f"https://tempo.example/t/{trace_id}"}
        none = (await api.get(f"/api/v1/tasks/{untraced.id}/trace")).json()
        assert none == {"trace_id": None, "url": None}
        missing = await api.get(f"/api/v1/tasks/{uuid.uuid4()}/trace")
        assert missing.status_code == 404


async def test_the_overview_counts_no_more_than_its_cap(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    await execute(
        settings.database_url,
        """INSERT INTO tasks (id, tenant, queue, title, priority, status, kind, created_at,
               updated_at, available_at, queued_at)
           SELECT gen_random_uuid(), 'default', 'default', 'bulk', $1, 'PENDING', 'noop',
               now(), now(), now(), now()
           FROM generate_series(1, 10005)""",
        Priority.HIGH.rank,
    )
    (default,) = [
        q for q in (await api.get("/api/v1/overview")).json()["queues"] if q["name"] == "default"
    ]
    assert default["ready"]["HIGH"] == 10_000
