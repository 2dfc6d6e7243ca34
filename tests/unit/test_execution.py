"""The worker's execution rules, with a fake store: the time limit, stops, retryable and
permanent failures, what each outcome records, and retries while PostgreSQL is away."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from services.core.domain import Claim, Priority, Status, Task
from services.core.errors import StoreUnavailable, TaskFailed
from services.core.kinds import Handler, Kind, TaskContext
from services.core.outputs import OutputLimits
from services.core.settings import Settings
from services.worker import execution
from services.worker.execution import Held, Outcome, StopReason, record, run_attempt

LIMITS = OutputLimits()
DEFAULT_TIMEOUT = 30.0


def claim(
    *, timeout: float | None = None, attempt: int = 1, payload: dict[str, Any] | None = None
) -> Claim:
    now = datetime.now(UTC)
    task = Task(
        id=uuid.uuid4(),
        title="t",
        description="",
        priority=Priority.MEDIUM,
        status=Status.IN_PROGRESS,
        kind="job",
        queue="gpu",
        payload={"n": 1} if payload is None else payload,
        result=None,
        error=None,
        attempts=attempt,
        max_attempts=3,
        timeout_seconds=timeout,
        created_at=now,
        updated_at=now,
        scheduled_at=None,
        started_at=now,
        finished_at=None,
        cancel_requested=False,
    )
    return Claim(task, tenant="acme")


def job(handler: Handler, timeout: float | None = None, takes_context: bool = False) -> Kind:
    return Kind("job", handler, timeout_seconds=timeout, takes_context=takes_context)


async def run(
    handler: Handler, *, limits: OutputLimits = LIMITS, default: float = DEFAULT_TIMEOUT
) -> Outcome:
    return await run_attempt(Held(claim()), job(handler), default, limits)


# --- what a handler's end earns --------------------------------------------------------


async def test_a_result_is_recorded_as_json_text() -> None:
    async def handler(payload: dict[str, Any]) -> object:
        return {"doubled": payload["n"] * 2, "note": "nul\x00"}

    outcome = await run(handler)
    assert outcome.action == "complete"
    assert json.loads(outcome.result) == {"doubled": 2, "note": "nul\ufffd"}


@pytest.mark.parametrize(("age", "least", "most"), [(0, 5, 5), (100, 20, 30), (7200, 300, 300)])
async def test_a_kind_this_worker_lacks_goes_back_uncounted_for_a_quarter_of_its_age(
    age: float, least: float, most: float
) -> None:
    held = claim()
    created = held.task.created_at - timedelta(seconds=age)
    held = dataclasses.replace(held, task=dataclasses.replace(held.task, created_at=created))
    outcome = await run_attempt(Held(held), None, DEFAULT_TIMEOUT, LIMITS)
    assert (outcome.action, outcome.error) == ("hand_back", "no handler for 'job'")
    assert least <= outcome.after_seconds <= most
    assert execution.UNKNOWN_KIND_SECONDS == (5.0, 300.0)


class Size(BaseModel):
    width: int
    height: int = 1


async def test_a_kind_with_a_payload_model_gets_an_instance_of_it() -> None:
    async def handler(payload: Size) -> object:
        return {"area": payload.width * payload.height}

    found = Kind("job", handler, payload=Size)
    held = Held(claim(payload={"width": 3, "height": 2}))
    outcome = await run_attempt(held, found, DEFAULT_TIMEOUT, LIMITS)
    assert (outcome.action, json.loads(outcome.result)) == ("complete", {"area": 6})


async def test_a_payload_its_model_refuses_fails_the_attempt_for_a_retry_naming_the_field() -> None:
    async def handler(payload: Size) -> object:
        raise AssertionError("not run")

    found = Kind("job", handler, payload=Size)
    held = Held(claim(payload={"height": 2}))
    outcome = await run_attempt(held, found, DEFAULT_TIMEOUT, LIMITS)
    assert (outcome.action, outcome.retryable) == ("fail", True)
    assert outcome.error is not None and "does not fit Size" in outcome.error
    assert "width" in outcome.error and held.handler is None


async def test_task_failed_not_retryable_stops_the_task_with_its_message() -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise TaskFailed("the image is corrupt", retryable=False)

    outcome = await run(handler)
    assert (outcome.action, outcome.retryable) == ("fail", False)
    assert outcome.error == "the image is corrupt"


async def test_task_failed_is_retryable_unless_it_says_otherwise() -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise TaskFailed("the service answered 503")

    outcome = await run(handler)
    assert (outcome.action, outcome.retryable, outcome.timed_out) == ("fail", True, False)


async def test_any_other_exception_is_retryable_and_named() -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise ConnectionResetError("peer went away")

    outcome = await run(handler)
    assert (outcome.action, outcome.retryable) == ("fail", True)
    assert outcome.error == "ConnectionResetError: peer went away"


class Unreadable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("error", "told"),
    [
        (KeyError(), "KeyError with no message"),
        (Unreadable(), "Unreadable: (its message could not be read)"),
        (TaskFailed(""), "TaskFailed with no message"),
    ],
)
async def test_an_error_without_a_readable_message_still_says_what_it_was(
    error: Exception, told: str
) -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise error

    assert (await run(handler)).error == told


async def test_a_long_error_is_cut_to_error_max_bytes() -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise TaskFailed("x" * 1000)

    error = (await run(handler, limits=OutputLimits(error_max_bytes=300))).error
    assert error is not None and len(error.encode()) <= 300
    assert error.endswith("[1000 bytes, cut to 300]")


@pytest.mark.parametrize(
    ("result", "why"),
    [
        (object(), "the result holds a object, which is not JSON"),
        (float("nan"), "the result holds nan, which JSON does not have"),
        ("x" * 2000, "the result is 2002 bytes of JSON, over the limit of 1024"),
    ],
)
async def test_a_result_that_cannot_be_stored_fails_the_task_for_good(
    result: object, why: str
) -> None:
    async def handler(payload: dict[str, Any]) -> object:
        return result

    outcome = await run(handler, limits=OutputLimits(result_max_bytes=1024))
    assert (outcome.action, outcome.retryable, outcome.error) == ("fail", False, why)


# --- the time limit -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_limit", "kind_limit", "default"),
    [(0.05, 10.0, 10.0), (None, 0.05, 10.0), (None, None, 0.05)],
    ids=["the task's own", "its kind's", "the default"],
)
async def test_the_time_limit_is_the_task_s_else_its_kind_s_else_the_default(
    task_limit: float | None, kind_limit: float | None, default: float
) -> None:
    stopped = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    held = Held(claim(timeout=task_limit))
    outcome = await run_attempt(held, job(handler, kind_limit), default, LIMITS)
    assert outcome == Outcome("fail", error="timed out after 0.05 s", timed_out=True)
    assert outcome.retryable
    assert stopped.is_set() and held.handler is not None and held.handler.done()


async def test_a_handler_gets_its_task_and_the_deadline_of_its_time_limit() -> None:
    seen: list[TaskContext] = []

    async def handler(payload: dict[str, Any], context: TaskContext) -> None:
        seen.append(context)

    held = Held(claim(timeout=20, attempt=2))
    before = datetime.now(UTC)
    await run_attempt(held, job(handler, takes_context=True), DEFAULT_TIMEOUT, LIMITS)
    after, limit = datetime.now(UTC), timedelta(seconds=20)
    (context,) = seen
    assert context is held.context
    assert (context.id, context.attempt) == (held.claim.task.id, 2)
    assert (context.tenant, context.queue) == ("acme", "gpu")
    assert before + limit <= context.deadline <= after + limit


# --- stops ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "action"), [("cancel", "cancelled"), ("drain", "hand_back"), ("lost", "nothing")]
)
async def test_a_stop_ends_the_handler_and_its_reason_says_what_to_record(
    reason: StopReason, action: str
) -> None:
    started = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(30)

    held = Held(claim())
    attempt = asyncio.create_task(run_attempt(held, job(handler), DEFAULT_TIMEOUT, LIMITS))
    await started.wait()
    held.stop(reason)
    assert (await attempt) == Outcome(action)  # type: ignore[arg-type]


async def test_the_first_stop_s_reason_wins() -> None:
    started = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(30)

    held = Held(claim())
    attempt = asyncio.create_task(run_attempt(held, job(handler), DEFAULT_TIMEOUT, LIMITS))
    await started.wait()
    held.stop("cancel")
    held.stop("drain")
    assert (await attempt).action == "cancelled"


async def test_a_stop_before_the_handler_starts_keeps_it_from_running() -> None:
    ran: list[bool] = []

    async def handler(payload: dict[str, Any]) -> None:
        ran.append(True)

    held = Held(claim())
    held.stop("drain")
    outcome = await run_attempt(held, job(handler), DEFAULT_TIMEOUT, LIMITS)
    assert outcome.action == "hand_back" and ran == []


async def test_a_handler_cancelled_when_no_stop_was_asked_fails_for_a_retry() -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise asyncio.CancelledError

    outcome = await run(handler)
    assert outcome == Outcome("fail", error="the handler was cancelled")


# --- recording ------------------------------------------------------------------------


class FakeStore:
    """The store's guarded writes of an attempt's end, recorded; PostgreSQL away for the
    first `away` calls."""

    def __init__(self, away: int = 0) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.away = away

    async def _write(self, *call: Any) -> Status:
        self.calls.append(call)
        if len(self.calls) <= self.away:
            raise StoreUnavailable("PostgreSQL is restarting")
        return Status.FAILED

    async def fail(
        self,
        task_id: uuid.UUID,
        attempt: int,
        error: str,
        retry_in: float | None,
        *,
        timed_out: bool = False,
    ) -> Status:
        return await self._write("fail", task_id, attempt, error, retry_in, timed_out)

    async def mark_cancelled(self, task_id: uuid.UUID, attempt: int) -> Status:
        return await self._write("cancelled", task_id, attempt)

    async def hand_back(self, task_id: uuid.UUID, attempt: int, after: float) -> Status:
        return await self._write("hand_back", task_id, attempt, after)


SETTINGS = Settings(retry_base_seconds=1.0, retry_max_seconds=300.0, lease_seconds=30.0)


async def no_complete(task_id: uuid.UUID, attempt: int, result: str) -> Status:
    raise AssertionError("only a completed attempt writes a result")


async def record_with(
    store: FakeStore, outcome: Outcome, *, attempt: int = 1, settings: Settings = SETTINGS
) -> tuple[Claim, Status | None]:
    claimed = claim(attempt=attempt)
    status = await record(store, settings, claimed, outcome, no_complete)  # type: ignore[arg-type]
    return claimed, status


async def test_a_result_is_written_through_the_batched_complete_with_its_attempt() -> None:
    written: list[tuple[uuid.UUID, int, str]] = []

    async def complete(task_id: uuid.UUID, attempt: int, result: str) -> Status:
        written.append((task_id, attempt, result))
        return Status.COMPLETED

    held, store = claim(attempt=2), FakeStore()
    outcome = Outcome("complete", result='{"ok": true}')
    status = await record(store, SETTINGS, held, outcome, complete)  # type: ignore[arg-type]
    assert status == Status.COMPLETED
    assert written == [(held.task.id, 2, '{"ok": true}')] and store.calls == []


async def test_a_retryable_failure_asks_for_a_jittered_backoff_by_attempt() -> None:
    store = FakeStore()
    held, _ = await record_with(store, Outcome("fail", error="boom"), attempt=3)
    ((action, task_id, attempt, error, retry_in, timed_out),) = store.calls
    assert (action, task_id, attempt, error, timed_out) == ("fail", held.task.id, 3, "boom", False)
    assert 2.0 <= retry_in <= 4.0  # base 1 s doubled twice, the lower half jittered


async def test_the_backoff_is_capped_at_retry_max_seconds() -> None:
    store = FakeStore()
    settings = Settings(retry_base_seconds=1.0, retry_max_seconds=10.0)
    await record_with(store, Outcome("fail", error="boom"), attempt=20, settings=settings)
    assert 5.0 <= store.calls[0][4] <= 10.0


async def test_a_permanent_failure_asks_for_no_retry_and_a_time_out_says_so() -> None:
    store = FakeStore()
    await record_with(store, Outcome("fail", error="bad", retryable=False))
    await record_with(store, Outcome("fail", error="timed out after 1 s", timed_out=True))
    (permanent, timed_out) = store.calls
    assert permanent[4] is None and not permanent[5]
    assert timed_out[4] is not None and timed_out[5]


async def test_a_cancel_and_a_hand_back_are_written_with_the_attempt() -> None:
    store = FakeStore()
    held, _ = await record_with(store, Outcome("cancelled"), attempt=4)
    await record_with(store, Outcome("hand_back", after_seconds=7.5), attempt=4)
    task_id = held.task.id
    assert store.calls[0] == ("cancelled", task_id, 4)
    assert store.calls[1][0] == "hand_back" and store.calls[1][2:] == (4, 7.5)


async def test_a_lost_task_writes_nothing_recovery_owns_it() -> None:
    store = FakeStore()
    _, status = await record_with(store, Outcome("nothing"))
    assert status is None and store.calls == []


async def test_a_write_is_tried_again_while_postgresql_is_away() -> None:
    store = FakeStore(away=2)
    _, status = await record_with(store, Outcome("hand_back"))
    assert status == Status.FAILED and len(store.calls) == 3


async def test_recording_gives_up_once_the_lease_would_have_run_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore(away=1_000)
    settings = Settings(lease_seconds=0.25)
    with caplog.at_level(logging.ERROR, logger="services.worker.execution"):
        held, status = await record_with(store, Outcome("cancelled"), settings=settings)
    assert status is None and 1 <= len(store.calls) <= 3
    (line,) = caplog.records
    assert line.getMessage().startswith("could not record cancelled")
    assert line.task_id == str(held.task.id)  # type: ignore[attr-defined]
