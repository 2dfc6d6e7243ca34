"""A failed attempt can be debugged from its history: the class and traceback of its
exception (of a time-out, where the handler was), in the API and in the worker's ERROR
line, and the lines its handler logged, kept for each attempt apart."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import httpx
import pytest

from services.core.settings import Settings
from services.worker import runner
from tests.support import kinds
from tests.support.services import running_api, running_worker, submit, wait_for


@pytest.fixture
def with_kinds(settings: Settings) -> Settings:
    return settings.model_copy(update={"task_modules": ["tests.support.kinds"]})


async def _attempts(api: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/api/v1/tasks/{task_id}/attempts")
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


async def _logs(api: httpx.AsyncClient, task_id: str, attempt: int) -> dict[str, Any]:
    response = await api.get(f"/api/v1/tasks/{task_id}/attempts/{attempt}/logs")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _said(logs: dict[str, Any]) -> list[tuple[str, str]]:
    return [(line["level"], line["message"]) for line in logs["lines"]]


async def test_a_failing_handlers_traceback_reaches_its_attempt_and_the_workers_error_line(
    with_kinds: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        async with running_api(with_kinds) as api, running_worker(with_kinds):
            task = await submit(api, kind="talkative", payload={"what": "disk"}, max_attempts=2)
            assert (await wait_for(api, task["id"]))["status"] == "COMPLETED"
            failed, completed = await _attempts(api, task["id"])
    assert (failed["outcome"], failed["error_type"]) == ("failed", "ValueError")
    assert failed["error"] == "ValueError: no luck with disk"
    assert failed["traceback"].startswith("Traceback (most recent call last):")
    assert "in _give_up" in failed["traceback"]
    assert failed["traceback"].endswith("ValueError: no luck with disk\n")
    assert (completed["outcome"], completed["error_type"], completed["traceback"]) == (
        "completed",
        None,
        None,
    )
    (line,) = [r for r in caplog.records if getattr(r, "task_id", None) == task["id"]]
    assert (line.levelno, line.name) == (logging.ERROR, "services.worker.telemetry")
    assert line.getMessage().startswith("attempt 1: fail -> PENDING: ValueError: no luck")
    assert "in _give_up" in line.getMessage()


async def test_a_timed_out_attempt_records_its_type_and_where_its_handler_was(
    with_kinds: Settings,
) -> None:
    async with running_api(with_kinds) as api, running_worker(with_kinds):
        task = await submit(api, kind="slow_by_default", max_attempts=1)
        assert (await wait_for(api, task["id"]))["status"] == "FAILED"
        (timed_out,) = await _attempts(api, task["id"])
    assert (timed_out["outcome"], timed_out["error_type"]) == ("timed_out", "TimeoutError")
    assert timed_out["error"] == "timed out after 0.2 s"
    assert "in slow_by_default" in timed_out["traceback"]
    assert "await asyncio.sleep(5)" in timed_out["traceback"]


async def test_each_attempt_shows_only_the_lines_its_handler_logged(with_kinds: Settings) -> None:
    async with running_api(with_kinds) as api, running_worker(with_kinds):
        task = await submit(api, kind="talkative", payload={"what": "disk"}, max_attempts=2)
        assert (await wait_for(api, task["id"]))["status"] == "COMPLETED"
        first, second = [await _logs(api, task["id"], n) for n in (1, 2)]
        third = await api.get(f"/api/v1/tasks/{task['id']}/attempts/3/logs")
    assert _said(first) == [("INFO", "attempt 1 starts"), ("WARNING", "payload has 1 keys")]
    assert _said(second) == [("INFO", "attempt 2 starts"), ("WARNING", "payload has 1 keys")]
    assert (first["attempt"], first["dropped"], second["attempt"]) == (1, 0, 2)
    assert all(line["logged_at"].endswith("Z") for line in first["lines"])
    assert third.status_code == 404
    assert third.json()["type"] == "urn:conveyor:problem:attempt-not-found"


async def test_a_running_attempts_lines_are_shown_before_it_ends(
    with_kinds: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "LOG_SECONDS", 0.0)  # every heartbeat, not every 5 s
    key = uuid.uuid4().hex
    async with running_api(with_kinds) as api, running_worker(with_kinds):
        task = await submit(api, kind="progressing", payload={"key": key}, timeout_seconds=60)
        await wait_for(api, task["id"], {"IN_PROGRESS"})
        for _ in range(200):
            running = await _logs(api, task["id"], 1)
            if running["lines"]:
                break
            await asyncio.sleep(0.05)
        assert (await api.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "IN_PROGRESS"
        kinds.release.setdefault(key, asyncio.Event()).set()
        assert (await wait_for(api, task["id"]))["status"] == "COMPLETED"
        done = await _logs(api, task["id"], 1)
    assert _said(running) == _said(done) == [("INFO", "halfway there")]
