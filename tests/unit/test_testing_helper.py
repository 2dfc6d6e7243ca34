"""conveyor.testing: a handler run with a fake context earns what the worker would give
it, and the context keeps what the handler reported."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import TaskContext, TaskFailed, kind
from conveyor.testing import (
    FakeContext,
    LogLine,
    OutputRefused,
    Progress,
    TaskCancelled,
    TaskTimedOut,
    run_task,
)
from services.core.kinds import kind_of
from services.core.outputs import OutputLimits
from services.worker.execution import Held, run_attempt
from tests.unit.test_execution import claim


@kind("testing.report", queue="reports")
async def report(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    for n in range(payload["rows"]):
        context.progress((n + 1) / payload["rows"], f"{n + 1} of {payload['rows']}")
    context.logger.info("reported %d rows for %s", payload["rows"], context.tenant)
    return {"rows": payload["rows"], "attempt": context.attempt, "queue": context.queue}


@kind("testing.shape")
async def shape(payload: dict[str, Any]) -> Any:
    return payload["value"] if "value" in payload else {"pair": (1, 2), "nul": "a\x00b"}


@kind("testing.slow", timeout_seconds=0.05)
async def slow(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    try:
        await asyncio.sleep(payload.get("seconds", 10))
    finally:
        context.logger.warning("stopped")
    return {}


async def test_the_result_comes_back_as_the_worker_stores_it() -> None:
    assert await run_task(shape, {}) == {"pair": [1, 2], "nul": "a\ufffdb"}


async def test_the_context_keeps_progress_reports_and_log_lines() -> None:
    context = FakeContext(attempt=2, tenant="acme")
    result = await run_task(report, {"rows": 2}, context=context)
    assert result == {"rows": 2, "attempt": 2, "queue": "reports"}
    assert context.progress_reports == [Progress(0.5, "1 of 2"), Progress(1.0, "2 of 2")]
    assert context.log_lines == [LogLine("INFO", "reported 2 rows for acme")]


async def test_log_lines_also_reach_logging_with_the_task_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = FakeContext()
    with caplog.at_level(logging.INFO, logger="conveyor.task"):
        await run_task(report, {"rows": 1}, context=context)
    [line] = [r for r in caplog.records if r.name == "conveyor.task.testing.report"]
    assert line.getMessage() == "reported 1 rows for default"
    assert line.task_id == str(context.id)


async def test_progress_is_checked_as_the_worker_checks_it() -> None:
    context = FakeContext()
    with pytest.raises(ValueError, match="from 0 to 1"):
        context.progress(1.5)
    context.progress(0.1, "x" * 300)
    assert context.progress_reports == [Progress(0.1, "x" * 200)]


async def test_the_deadline_is_the_kinds_time_limit_from_the_start() -> None:
    @kind("testing.deadline", timeout_seconds=120)
    async def deadline(payload: dict[str, Any], context: TaskContext) -> str:
        return context.deadline.isoformat()

    before = datetime.now(UTC)
    ends = datetime.fromisoformat(await run_task(deadline))
    assert before + timedelta(seconds=120) <= ends <= datetime.now(UTC) + timedelta(seconds=120)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({1, 2}, "the result holds a set, which is not JSON"),
        (math.nan, "the result holds nan, which JSON does not have"),
        (b"png", "the result holds a bytes, which is not JSON"),
        (datetime(2026, 1, 1, tzinfo=UTC), "the result holds a datetime, which is not JSON"),
    ],
)
async def test_a_result_the_worker_would_refuse_is_refused(value: object, reason: str) -> None:
    with pytest.raises(OutputRefused) as refused:
        await run_task(_returning(value))
    assert str(refused.value) == reason


async def test_a_result_too_large_or_too_deep_is_refused_by_the_limits() -> None:
    with pytest.raises(OutputRefused, match="over the limit of 1024"):
        await run_task(_returning("x" * 2000), limits=OutputLimits(result_max_bytes=1024))
    with pytest.raises(OutputRefused, match="nests deeper than 32 levels"):
        await run_task(_returning(_nested(40)))


async def test_the_handlers_own_errors_reach_the_test() -> None:
    with pytest.raises(TaskFailed) as failed:
        await run_task("fail", {"message": "no such image", "retryable": False})
    assert str(failed.value) == "no such image" and not failed.value.retryable
    with pytest.raises(KeyError):
        await run_task(report, {})


async def test_the_kinds_time_limit_applies_and_the_tasks_own_wins() -> None:
    context = FakeContext()
    with pytest.raises(TaskTimedOut, match=r"^timed out after 0.05 s$"):
        await run_task(slow, context=context)
    assert context.log_lines == [LogLine("WARNING", "stopped")]  # its finally ran
    with pytest.raises(TaskTimedOut, match=r"after 0\.01 s"):
        await run_task(slow, timeout_seconds=0.01)
    assert await run_task(slow, {"seconds": 0}) == {}


async def test_a_cancel_request_stops_the_handler_at_its_next_await() -> None:
    context = FakeContext()
    with pytest.raises(TaskCancelled):
        await run_task(slow, {"seconds": 10}, context=context, timeout_seconds=5, cancel_after=0)
    assert context.cancel_requested
    assert context.log_lines == [LogLine("WARNING", "stopped")]


async def test_a_cancel_can_be_requested_at_an_exact_point() -> None:
    context = FakeContext()
    uploaded: list[int] = []

    async def upload(n: int) -> None:  # a test double of what the handler awaits
        uploaded.append(n)
        if n == 2:
            context.request_cancel()
        await asyncio.sleep(0)

    @kind("testing.uploads")
    async def uploads(payload: dict[str, Any]) -> None:
        for n in range(5):
            await upload(n)

    with pytest.raises(TaskCancelled):
        await run_task(uploads, context=context)
    assert uploaded == [0, 1, 2]


async def test_a_kind_is_found_by_name_as_the_worker_finds_it() -> None:
    assert await run_task("echo", {"to": ("a", "b")}) == {"to": ["a", "b"]}
    found = await run_task("testing.report", {"rows": 1}, modules=[__name__])
    assert found["queue"] == "reports"
    with pytest.raises(LookupError, match=r"no kind .testing\.report. .*name its module"):
        await run_task("testing.report", {"rows": 1})


async def test_what_no_worker_could_run_is_refused_before_the_handler() -> None:
    async def unmarked(payload: dict[str, Any]) -> None: ...

    with pytest.raises(TypeError, match="not marked with @kind"):
        await run_task(unmarked)
    with pytest.raises(ValueError, match="the payload is not JSON"):
        await run_task(shape, {"when": datetime.now(UTC)})
    with pytest.raises(TypeError, match="payload is a JSON object"):
        await run_task(shape, [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error", "retryable"),
    [
        ({"ok": (1,)}, None, None),
        ({1, 2}, OutputRefused, False),
        (TaskFailed("gone", retryable=False), TaskFailed, False),
        (TaskFailed("busy"), TaskFailed, True),
        (ValueError("bad"), ValueError, True),
    ],
)
async def test_run_task_and_the_worker_agree(
    value: object, error: type[Exception] | None, retryable: bool | None
) -> None:
    handler = _returning(value)
    outcome = await run_attempt(Held(claim()), kind_of(handler), 30.0, OutputLimits())
    assert outcome.action == ("complete" if error is None else "fail")
    if error is None:
        assert await run_task(handler) == {"ok": [1]}
        return
    assert outcome.retryable is retryable
    with pytest.raises(error):
        await run_task(handler)


async def test_run_task_and_the_worker_agree_on_a_time_limit() -> None:
    outcome = await run_attempt(Held(claim(timeout=0.01)), kind_of(slow), 30.0, OutputLimits())
    assert (outcome.action, outcome.retryable, outcome.error) == (
        "fail",
        True,
        "timed out after 0.01 s",
    )
    with pytest.raises(TaskTimedOut, match=f"^{outcome.error}$"):
        await run_task(slow, timeout_seconds=0.01)


def _returning(value: object) -> Any:
    """A kind whose handler returns `value`, or raises it if it is an exception."""

    @kind(f"testing.returning-{uuid.uuid4().hex[:6]}")
    async def handler(payload: dict[str, Any]) -> object:
        if isinstance(value, Exception):
            raise value
        return value

    return handler


def _nested(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value
