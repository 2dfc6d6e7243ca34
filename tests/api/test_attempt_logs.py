"""GET /api/v1/tasks/{id}/attempts/{n}/logs: the lines a handler logged in one attempt, as
its worker wrote them with the attempt's end or its heartbeat; the caller's tasks only."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from services.core.db.store import SqlTaskStore
from services.core.domain import Claim, NewTask, Status
from services.core.outputs import AttemptLog, LogWindow
from tests.support.store import create, queue_and_claim

PROBLEM = "urn:conveyor:problem:"


def _window(*messages: str, max_bytes: int = 65_536) -> LogWindow:
    log = AttemptLog(max_bytes)
    for message in messages:
        log.add(datetime.now(UTC), "INFO", message)
    window = log.window()
    assert window is not None
    return window


async def _claimed(store: SqlTaskStore, tenant: str = "default") -> Claim:
    task, _ = await create(store, NewTask(title="t", kind="noop"), tenant=tenant)
    claim = await queue_and_claim(store)
    assert claim.task.id == task.id
    return claim


async def _logs(api: httpx.AsyncClient, task_id: uuid.UUID, attempt: int) -> httpx.Response:
    return await api.get(f"/api/v1/tasks/{task_id}/attempts/{attempt}/logs")


def _messages(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return [line["message"] for line in body["lines"]]


async def test_the_lines_written_with_a_failure_are_read_back_with_how_many_were_dropped(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    claim = await _claimed(store)
    many = [f"line {n} " + "." * 100 for n in range(100)]
    window = _window(*many, max_bytes=4096)
    status = await store.fail(
        claim.task.id, claim.attempt, "boom", None, error_type="OSError", logs=window
    )
    assert status is Status.FAILED
    response = await _logs(api, claim.task.id, 1)
    kept = _messages(response)
    assert kept == many[-len(kept) :] and response.json()["dropped"] == 100 - len(kept) > 0
    (attempt,) = (await api.get(f"/api/v1/tasks/{claim.task.id}/attempts")).json()["items"]
    assert (attempt["error_type"], attempt["traceback"]) == ("OSError", None)


async def test_an_attempt_not_started_is_404_and_a_started_one_without_lines_has_none(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    claim = await _claimed(store)
    assert _messages(await _logs(api, claim.task.id, 1)) == []  # running, nothing logged yet
    missing = await _logs(api, claim.task.id, 2)
    assert (missing.status_code, missing.json()["type"]) == (404, PROBLEM + "attempt-not-found")
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await _logs(api, claim.task.id, 0)).status_code == 422
    unknown = await _logs(api, uuid.uuid4(), 1)
    assert (unknown.status_code, unknown.json()["type"]) == (404, PROBLEM + "task-not-found")


async def test_another_tenants_attempt_answers_404_like_an_unknown_task(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    claim = await _claimed(store, tenant="acme")  # the API, keys off, is the default tenant's
    await store.mark_cancelled(claim.task.id, claim.attempt, logs=_window("acme's secret"))
    foreign = await _logs(api, claim.task.id, 1)
    unknown = await _logs(api, uuid.UUID(int=0), 1)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["type"] == unknown.json()["type"] == PROBLEM + "task-not-found"
    assert "acme's secret" not in foreign.text
    stored = await store.attempt_logs(claim.task.id, 1)
    assert [line["message"] for line in stored.lines] == ["acme's secret"]


async def test_a_heartbeats_lines_are_replaced_by_the_ends_and_a_hand_back_drops_them(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    claim = await _claimed(store)
    held = [(claim.task.id, claim.attempt)]
    beat = await store.heartbeat("w", held, 30, logs={claim.task.id: _window("one")})
    assert beat.held == {claim.task.id}
    assert _messages(await _logs(api, claim.task.id, 1)) == ["one"]
    await store.heartbeat("w", held, 30, logs={claim.task.id: _window("one", "two")})
    assert _messages(await _logs(api, claim.task.id, 1)) == ["one", "two"]

    assert await store.hand_back(claim.task.id, claim.attempt) is Status.PENDING
    assert (await _logs(api, claim.task.id, 1)).status_code == 404  # its number is given back
    again = await queue_and_claim(store)
    assert again.attempt == 1
    assert _messages(await _logs(api, claim.task.id, 1)) == []  # the new run's own, none yet
    done = json.dumps({"ok": True})
    logs = {claim.task.id: _window("three")}
    assert await store.complete_many([(claim.task.id, 1, done)], logs=logs) == [Status.COMPLETED]
    assert _messages(await _logs(api, claim.task.id, 1)) == ["three"]


async def test_a_late_write_of_a_fenced_off_attempt_stores_no_lines(
    api: httpx.AsyncClient, store: SqlTaskStore
) -> None:
    claim = await _claimed(store)
    await store.fail(claim.task.id, claim.attempt, "boom", 0.0)
    late = await store.fail(claim.task.id, claim.attempt, "late", None, logs=_window("late"))
    assert late is None
    assert _messages(await _logs(api, claim.task.id, 1)) == []
