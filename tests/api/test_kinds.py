"""Kinds registered by workers: the API takes what a worker runs without importing it,
checks payloads against the schema the worker registered, and lists and forgets kinds."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from services.core.db.store import SqlTaskStore
from services.core.db.workers import WorkerCard
from services.core.kinds import KindCard
from services.core.settings import Settings
from services.worker import execution
from tests.support.database import execute, fetch
from tests.support.processes import start_worker_process, worker_log
from tests.support.services import running_api, running_worker, submit, wait_for

# A user's task module that only the worker process can import: it lives in a folder on
# that process's PYTHONPATH alone.
SHOP_TASKS = '''
from pydantic import BaseModel, Field

from conveyor import kind


class ResizeIn(BaseModel):
    url: str
    width: int = Field(gt=0)


@kind("resize", payload=ResizeIn, timeout_seconds=30)
async def resize(payload: ResizeIn) -> dict:
    """Resize an image to a width.

    The rest of this text is not the kind's description."""
    return {"url": payload.url, "width": payload.width}
'''


async def _kinds(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await api.get("/api/v1/kinds")
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()["items"]}


async def _until_listed(
    api: httpx.AsyncClient, name: str, process: Any, workers: int = 0
) -> dict[str, Any]:
    """The kind `name` once listed with at least `workers` live workers running it (a
    worker registers its kinds, then itself)."""
    deadline = time.monotonic() + 60
    while name not in (kinds := await _kinds(api)) or kinds[name]["workers"] < workers:
        assert process.poll() is None, worker_log(process)
        assert time.monotonic() < deadline, f"{name} never registered: {worker_log(process)}"
        await asyncio.sleep(0.1)
    return kinds[name]


def _refused_at(response: httpx.Response) -> list[Any]:
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    return error["loc"]  # type: ignore[no-any-return]


async def test_a_kind_only_a_worker_imports_is_taken_checked_and_run(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "shop_tasks.py").write_text(textwrap.dedent(SHOP_TASKS))
    good = {"kind": "resize", "payload": {"url": "s3://a.png", "width": 64}}
    async with running_api(settings) as api:
        unknown = await api.post("/api/v1/tasks", json={"title": "t", **good})
        assert _refused_at(unknown) == ["body", "kind"]
        assert "no worker has registered it" in unknown.json()["detail"]

        path = os.pathsep.join([str(tmp_path), *sys.path])
        worker_settings = settings.model_copy(update={"task_modules": ["shop_tasks"]})
        worker = start_worker_process(worker_settings, {"PYTHONPATH": path})
        try:
            listed = await _until_listed(api, "resize", worker, workers=1)
            assert "shop_tasks" not in sys.modules  # the API never imported it
            missing = {"kind": "resize", "payload": {"url": "s3://a.png"}}
            response = await api.post("/api/v1/tasks", json={"title": "t", **missing})
            assert _refused_at(response) == ["body", "payload", "width"]
            assert response.json()["detail"] == (
                'body.payload.width: "width" is a required property'
                " (the payload schema of kind 'resize')"
            )
            wrong = {"kind": "resize", "payload": {"url": "s3://a.png", "width": "wide"}}
            response = await api.post("/api/v1/tasks", json={"title": "t", **wrong})
            assert _refused_at(response) == ["body", "payload", "width"]
            task = await submit(api, **good)
            done = await wait_for(api, task["id"], timeout=30)
            assert (done["status"], done["result"]) == ("COMPLETED", good["payload"])
        finally:
            worker.send_signal(signal.SIGTERM)
            await asyncio.to_thread(worker.wait, 30)
        assert listed["description"] == "Resize an image to a width."
        assert (listed["builtin"], listed["queue"], listed["workers"]) == (False, "default", 1)
        assert listed["payload_schema"]["required"] == ["url", "width"]
        (version,) = listed["versions"]
        assert version["timeout_seconds"] == 30

        # No worker runs it now (a pool scaled to zero): still taken, its tasks wait.
        assert (await _kinds(api))["resize"]["workers"] == 0
        waiting = await submit(api, **good)
        assert waiting["status"] in ("NEW", "PENDING")
        response = await api.post("/api/v1/tasks", json={"title": "t", **missing})
        assert _refused_at(response) == ["body", "payload", "width"]


async def test_with_unregistered_kinds_taken_a_task_waits_for_a_worker_that_runs_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execution, "UNKNOWN_KIND_SECONDS", (0.1, 0.2))
    settings = settings.model_copy(update={"accept_unregistered_kinds": True})
    async with running_api(settings) as api:
        async with running_worker(settings):  # built-in kinds only
            before = _handed_back()
            task = await submit(api, kind="count", payload={"key": "waits"})
            deadline = time.monotonic() + 30
            while _handed_back() < before + 2:  # taken and handed back, again
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            waiting = (await api.get(f"/api/v1/tasks/{task['id']}")).json()
            assert (waiting["status"], waiting["attempts"]) == ("PENDING", 0)
        with_count = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
        async with running_worker(with_count):
            done = await wait_for(api, task["id"], timeout=30)
        attempts = (await api.get(f"/api/v1/tasks/{task['id']}/attempts")).json()["items"]
    assert (done["status"], done["attempts"], done["result"]) == ("COMPLETED", 1, {"runs": 1})
    assert [a["outcome"] for a in attempts] == ["completed"]


def _handed_back() -> float:
    """This process's (its in-process workers') hand-backs of `count` for want of a handler."""
    labels = {"kind": "count", "reason": "no_handler"}
    return REGISTRY.get_sample_value("conveyor_task_hand_backs_total", labels) or 0.0


def _card(schema: dict[str, Any]) -> KindCard:
    return KindCard.of("resize", "default", None, "", schema)


V1 = _card({"type": "object", "properties": {"width": {"type": "integer"}}, "required": ["width"]})
V2 = _card({"type": "object", "properties": {"size": {"type": "string"}}, "required": ["size"]})


async def _worker_running(store: SqlTaskStore, worker_id: str, card: KindCard) -> None:
    row = WorkerCard(worker_id, "h", "1", ("default",), ("resize",), 1, (card.digest,))
    await store.register_worker(row, 30)


async def test_during_a_rollout_a_payload_either_running_version_takes_is_taken(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    await store.register_kinds([V1], "1.0")
    await _worker_running(store, "old", V1)
    await store.register_kinds([V2], "2.0")
    await _worker_running(store, "new", V2)
    by_width = {"title": "t", "kind": "resize", "payload": {"width": 3}}
    by_size = {"title": "t", "kind": "resize", "payload": {"size": "L"}}
    neither = {"title": "t", "kind": "resize", "payload": {}}
    assert (await api.post("/api/v1/tasks", json=by_width)).status_code == 201
    assert (await api.post("/api/v1/tasks", json=by_size)).status_code == 201
    # A payload no version takes is refused by the newest one's schema.
    assert _refused_at(await api.post("/api/v1/tasks", json=neither)) == [
        "body",
        "payload",
        "size",
    ]
    listed = (await _kinds(api))["resize"]
    assert [v["version"] for v in listed["versions"]] == ["2.0", "1.0"]
    assert listed["payload_schema"] == V2.payload_schema and listed["workers"] == 2

    # The old workers are gone: only the new version is taken (once the catalog is read).
    await store.remove_worker("old")
    assert [v["version"] for v in (await _kinds(api))["resize"]["versions"]] == ["2.0"]
    assert _refused_at(await api.post("/api/v1/tasks", json=by_width))[:3] == [
        "body",
        "payload",
        "size",
    ]
    # And with no worker at all, the version registered last.
    await store.remove_worker("new")
    assert (await api.post("/api/v1/tasks", json=by_size)).status_code == 201


async def test_a_kind_no_worker_runs_can_be_forgotten_a_running_or_built_in_one_not(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    await store.register_kinds([V1], "1.0")
    await _worker_running(store, "w", V1)
    assert (await api.delete("/api/v1/kinds/resize")).json()["type"].endswith("kind-in-use")
    assert (await api.delete("/api/v1/kinds/demo")).status_code == 409
    assert (await api.delete("/api/v1/kinds/nothing")).json()["type"].endswith("kind-not-found")
    await store.remove_worker("w")
    assert (await api.delete("/api/v1/kinds/resize")).status_code == 204
    assert "resize" not in await _kinds(api)
    body = {"title": "t", "kind": "resize", "payload": {"width": 3}}
    assert _refused_at(await api.post("/api/v1/tasks", json=body)) == ["body", "kind"]


async def test_patterns_are_read_as_the_workers_models_read_them_without_backtracking(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    # What pydantic writes for Field(pattern=...): Rust's syntax, linear in time there.
    properties = {
        "name": {"type": "string", "pattern": r"^\p{L}+$"},
        "code": {"type": "string", "pattern": r"^(a+)+$"},
    }
    card = KindCard.of("named", "default", None, "", {"type": "object", "properties": properties})
    await store.register_kinds([card], "1.0")
    named = {"title": "t", "kind": "named", "payload": {"name": "Zoë"}}
    assert (await api.post("/api/v1/tasks", json=named)).status_code == 201
    # A nested quantifier that Python's re would take hours over: refused at once.
    slow = {**named, "payload": {"name": "Zoë", "code": "a" * 5000 + "b"}}
    assert _refused_at(await api.post("/api/v1/tasks", json=slow)) == ["body", "payload", "code"]


async def test_a_schema_that_does_not_compile_takes_any_payload(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    broken = {"type": "object", "properties": {"x": {"type": "string", "pattern": "(unclosed"}}}
    await store.register_kinds([KindCard.of("broken", "default", None, "", broken)], "1.0")
    body = {"title": "t", "kind": "broken", "payload": {"x": 1}}
    assert (await api.post("/api/v1/tasks", json=body)).status_code == 201


async def test_a_version_no_live_worker_runs_is_forgotten_a_day_after_a_newer_one_came(
    store: SqlTaskStore, settings: Settings
) -> None:
    await store.register_kinds([V1], "1.0")
    await _worker_running(store, "old", V1)  # alive: kept however old
    await store.register_kinds([_card({"type": "object"})], "1.5")
    await execute(
        settings.database_url, "UPDATE kinds SET registered_at = now() - interval '2 days'"
    )
    await store.register_kinds([V2], "2.0")
    assert sorted(v.version for v in await store.current_kinds()) == ["1.0", "2.0"]
    rows = await fetch(settings.database_url, "SELECT version FROM kinds ORDER BY version")
    assert [row["version"] for row in rows] == ["1.0", "2.0"]  # 1.5: no worker, old, gone


async def test_forgetting_checks_for_live_workers_in_its_own_statement_and_a_worker_restores(
    store: SqlTaskStore, settings: Settings
) -> None:
    await store.register_kinds([V1], "1.0")
    await _worker_running(store, "w", V1)
    assert await store.forget_kind("resize") == 0  # a live worker runs it: kept
    await store.remove_worker("w")
    assert await store.forget_kind("resize") == 1
    # The worker's beat writes back what is missing, and moves nothing that is there.
    await store.register_kinds([V2], "2.0")
    await execute(settings.database_url, "UPDATE kinds SET registered_at = '2020-01-01Z'")
    await store.register_kinds([V1, V2], "1.0", renew=False)
    rows = await fetch(settings.database_url, "SELECT version, registered_at FROM kinds")
    restored = {row["version"]: row["registered_at"].year for row in rows}
    assert restored == {"2.0": 2020, "1.0": datetime.now(UTC).year}
