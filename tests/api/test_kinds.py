"""Kinds registered by workers: the API takes what a worker runs without importing it,
checks payloads against the schema the worker registered, and lists and forgets kinds."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.db.store import SqlTaskStore
from services.core.db.workers import WorkerCard
from services.core.kinds import KindCard
from services.core.settings import Settings
from services.worker import execution
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


async def _until_listed(api: httpx.AsyncClient, name: str, process: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while name not in (kinds := await _kinds(api)):
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
            listed = await _until_listed(api, "resize", worker)
            assert "shop_tasks" not in sys.modules  # the API never imported it
            missing = {"kind": "resize", "payload": {"url": "s3://a.png"}}
            response = await api.post("/api/v1/tasks", json={"title": "t", **missing})
            assert _refused_at(response) == ["body", "payload", "width"]
            assert "'width' is a required property" in response.json()["detail"]
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
            task = await submit(api, kind="count", payload={"key": "waits"})
            await asyncio.sleep(1.5)  # taken and handed back, again and again
            assert (await api.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "PENDING"
        with_count = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
        async with running_worker(with_count):
            done = await wait_for(api, task["id"], timeout=30)
        attempts = (await api.get(f"/api/v1/tasks/{task['id']}/attempts")).json()["items"]
    assert (done["status"], done["attempts"], done["result"]) == ("COMPLETED", 1, {"runs": 1})
    assert [a["outcome"] for a in attempts] == ["completed"]


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
