"""Every built-in kind from submit to its terminal status, through the real broker."""

from __future__ import annotations

import httpx

from tests.support.services import submit, wait_for


async def test_every_builtin_kind_reaches_its_terminal_status(system: httpx.AsyncClient) -> None:
    cases = {
        "demo": ({"seconds": 0.05}, "COMPLETED", {"message": "worked for 0.05 s", "slept": 0.05}),
        "noop": ({}, "COMPLETED", {}),
        "sleep": ({"seconds": 0.05}, "COMPLETED", {"slept": 0.05}),
        "echo": ({"x": [1, {"y": None}]}, "COMPLETED", {"x": [1, {"y": None}]}),
        "fail": ({"message": "bad input", "retryable": False}, "FAILED", None),
    }
    submitted = {
        kind: await submit(system, kind=kind, payload=payload)
        for kind, (payload, _, _) in cases.items()
    }
    for kind, (_, status, result) in cases.items():
        task = await wait_for(system, submitted[kind]["id"])
        assert (task["status"], task["result"]) == (status, result), task
        assert task["attempts"] == 1
        assert task["started_at"] and task["finished_at"]
    failed = await wait_for(system, submitted["fail"]["id"])
    assert failed["error"] == "bad input"


async def test_a_retryable_failure_is_tried_until_attempts_are_used_up(
    system: httpx.AsyncClient,
) -> None:
    task = await submit(
        system, kind="fail", max_attempts=3, payload={"message": "flaky", "retryable": True}
    )
    final = await wait_for(system, task["id"])
    assert (final["status"], final["attempts"], final["error"]) == ("FAILED", 3, "flaky")


async def test_a_task_scheduled_in_the_near_future_runs_after_its_time(
    system: httpx.AsyncClient,
) -> None:
    from datetime import UTC, datetime, timedelta

    at = datetime.now(UTC) + timedelta(seconds=1)
    task = await submit(system, kind="noop", scheduled_at=at.isoformat())
    final = await wait_for(system, task["id"])
    assert final["status"] == "COMPLETED"
    assert datetime.fromisoformat(final["started_at"]) >= at
