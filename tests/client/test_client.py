"""conveyor_client against the real API: every call, its errors, and its retries."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conveyor_client import AsyncClient, AttemptLogs, Client, Kind, Retry, Worker
from conveyor_client import errors as problems

from services.core.auth import parse_scopes
from services.core.db.keys import SqlKeyStore
from services.core.settings import Settings
from tests.support.processes import start_process, wait_until_ready
from tests.support.rabbit import PrivateRabbit
from tests.support.services import free_port, running_api, running_worker

FAST = Retry(attempts=8, base=0.05, cap=1.0)


class Counting(httpx.AsyncHTTPTransport):
    """A transport that counts the answers of each status."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


async def test_every_task_call_round_trips(settings: Settings) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    async with running_api(settings) as api, running_worker(settings):
        async with AsyncClient(str(api.base_url), retry=FAST) as conveyor:
            task = await conveyor.submit("hello", kind="echo", payload={"n": 1}, priority="HIGH")
            assert (task.title, task.priority, task.payload) == ("hello", "HIGH", {"n": 1})
            done = await conveyor.wait(task.id, timeout=20)
            assert (done.status, done.result, done.is_terminal) == ("COMPLETED", {"n": 1}, True)
            assert (await conveyor.get(task.id)).finished_at == done.finished_at
            (attempt,) = await conveyor.attempts(task.id)
            assert (attempt.attempt, attempt.outcome) == (1, "completed")

            again = await conveyor.submit("hello", kind="echo", idempotency_key="k-1")
            same = await conveyor.submit("hello", kind="echo", idempotency_key="k-1")
            assert same.id == again.id  # a retried submit makes one task
            with pytest.raises(problems.IdempotencyKeyReused):
                await conveyor.submit("other", kind="echo", idempotency_key="k-1")

            failed = await conveyor.submit("no", kind="fail", payload={"retryable": False})
            assert (await conveyor.wait(failed.id, timeout=20)).status == "FAILED"
            rerun = await conveyor.retry(failed.id)
            assert rerun.status == "PENDING" and rerun.id == failed.id
            with pytest.raises(problems.TaskNotRerunnable):
                await conveyor.retry(task.id)

            later = await conveyor.submit("later", kind="noop", scheduled_at="2030-01-01T00:00:00Z")
            assert (await conveyor.cancel(later.id)).status == "CANCELLED"
            with pytest.raises(problems.TaskTerminal):
                await conveyor.cancel(later.id)
            with pytest.raises(problems.TaskNotFound):
                await conveyor.get("00000000-0000-0000-0000-000000000000")

            outcomes = await conveyor.submit_many(
                [{"title": "one", "kind": "noop"}, {"title": "two", "kind": "no-such-kind"}]
            )
            assert [o.outcome for o in outcomes] == ["created", "refused"]
            assert isinstance(outcomes[1].problem, problems.ValidationFailed)
            with pytest.raises(problems.ValidationFailed) as refused:
                await conveyor.submit("", kind="noop")
            assert refused.value.errors[0]["loc"] == ["body", "title"]

            who = await conveyor.whoami()
            assert (who.tenant, "platform" in who.scopes) == ("default", True)


async def test_an_attempts_traceback_and_log_lines_are_read_by_both_clients(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    async with running_api(settings) as api, running_worker(settings):
        async with AsyncClient(str(api.base_url), retry=FAST) as conveyor:
            task = await conveyor.submit("t", kind="talkative", max_attempts=2)
            assert (await conveyor.wait(task.id, timeout=20)).status == "COMPLETED"
            failed, _ = await conveyor.attempts(task.id)
            logs = await conveyor.attempt_logs(task.id, 2)
            with pytest.raises(problems.AttemptNotFound):
                await conveyor.attempt_logs(task.id, 3)

        def read_blocking() -> AttemptLogs:
            with Client(str(api.base_url), retry=FAST) as blocking:
                return blocking.attempt_logs(task.id, 1)

        first = await asyncio.to_thread(read_blocking)
    assert failed.error_type == "ValueError" and "in _give_up" in (failed.traceback or "")
    assert [line.message for line in first.lines] == ["attempt 1 starts", "payload has 0 keys"]
    assert [line.message for line in logs.lines] == ["attempt 2 starts", "payload has 0 keys"]
    assert (logs.attempt, logs.dropped, logs.lines[0].level) == (2, 0, "INFO")
    assert logs.lines[0].logged_at.tzinfo is not None


async def test_listing_walks_every_page_and_bulk_actions_take_the_same_filters(
    api: httpx.AsyncClient,
) -> None:
    async with AsyncClient(str(api.base_url), retry=FAST) as conveyor:
        outcomes = await conveyor.submit_many(
            [{"title": f"item {n}", "kind": "noop", "priority": "LOW"} for n in range(25)]
        )
        made = {o.task.id for o in outcomes if o.task}
        seen = [task.id async for task in conveyor.list(priority="LOW", page_size=10)]
        assert len(seen) == 25 and set(seen) == made
        titled = [task.title async for task in conveyor.list(title="item 1")]
        assert sorted(titled) == sorted(f"item {n}" for n in (1, *range(10, 20)))
        changed = await conveyor.cancel_matching(priority="LOW", title="item 2")
        assert changed.changed == 6  # item 2, and 20 to 24
        assert (await conveyor.retry_matching(status="CANCELLED")).changed == 6


async def test_schedules_and_queues(api: httpx.AsyncClient) -> None:
    async with AsyncClient(str(api.base_url), retry=FAST) as conveyor:
        made = await conveyor.create_schedule(
            "nightly", "0 3 * * *", {"title": "clean up", "kind": "noop"}, timezone="Asia/Tokyo"
        )
        assert made.next_runs[0].utcoffset() is not None and len(made.next_runs) == 5
        with pytest.raises(problems.ScheduleNameTaken):
            await conveyor.create_schedule("nightly", "0 3 * * *", {"title": "x", "kind": "noop"})
        with pytest.raises(problems.ValidationFailed):
            await conveyor.create_schedule("bad", "61 * * * *", {"title": "x", "kind": "noop"})
        assert (await conveyor.pause_schedule(made.id)).paused is True
        assert (await conveyor.resume_schedule(made.id)).next_run_at is not None
        assert [s.name async for s in conveyor.schedules()] == ["nightly"]
        assert (await conveyor.get_schedule(made.id)).cron == "0 3 * * *"
        await conveyor.delete_schedule(made.id)
        with pytest.raises(problems.ScheduleNotFound):
            await conveyor.get_schedule(made.id)

        assert [q.name for q in await conveyor.queues()] == ["default"]
        assert (await conveyor.pause_queue("default")).paused is True
        assert (await conveyor.resume_queue("default")).paused is False
        with pytest.raises(problems.QueueNotFound):
            await conveyor.pause_queue("nope")


async def test_the_workers_are_read_by_both_clients(settings: Settings) -> None:
    settings = settings.model_copy(update={"worker_id": "w-client", "worker_concurrency": 3})
    async with running_api(settings) as api, running_worker(settings):
        async with AsyncClient(str(api.base_url), retry=FAST) as conveyor:
            (worker,) = await conveyor.workers()
            assert [w.id for w in await conveyor.workers(queue="default")] == [worker.id]
            with pytest.raises(problems.ValidationFailed):
                await conveyor.workers(queue="nope")

        def read_blocking() -> list[Worker]:
            with Client(str(api.base_url), retry=FAST) as blocking:
                return blocking.workers()

        assert [w.id for w in await asyncio.to_thread(read_blocking)] == ["w-client"]
    assert (worker.id, worker.state, worker.queues) == ("w-client", "alive", ["default"])
    assert (worker.concurrency, worker.running) == (3, 0)
    assert worker.last_seen_at.tzinfo is not None and worker.started_at <= worker.last_seen_at


async def test_kinds_are_listed_and_forgotten_by_both_clients(settings: Settings) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    async with running_api(settings) as api:
        async with running_worker(settings):
            async with AsyncClient(str(api.base_url), retry=FAST) as conveyor:
                listed = {kind.name: kind for kind in await conveyor.kinds()}
                with pytest.raises(problems.KindInUse):
                    await conveyor.forget_kind("count")

        def forget_blocking() -> list[Kind]:
            with Client(str(api.base_url), retry=FAST) as blocking:
                blocking.forget_kind("count")
                with pytest.raises(problems.KindNotFound):
                    blocking.forget_kind("count")
                return blocking.kinds()

        left = {kind.name for kind in await asyncio.to_thread(forget_blocking)}
    count = listed["count"]
    assert (count.builtin, count.workers, count.queue) == (False, 1, "default")
    (version,) = count.versions
    assert version.workers == 1 and version.registered_at is not None
    assert listed["demo"].builtin and "count" not in left and "flaky" in left


async def test_refusals_past_those_the_answer_details_keep_their_class(
    api: httpx.AsyncClient,
) -> None:
    bad = [{"title": "", "kind": "noop"}] * 21
    keyed = [{"title": t, "kind": "noop", "idempotency_key": "k"} for t in ("a", "b")]
    async with AsyncClient(str(api.base_url), retry=FAST) as conveyor:
        outcomes = await conveyor.submit_many([*bad, *keyed])
    assert [o.outcome for o in outcomes] == ["refused"] * 21 + ["created", "refused"]
    assert isinstance(outcomes[0].problem, problems.ValidationFailed)
    assert outcomes[0].problem.errors[0]["loc"] == ["body", "tasks", 0, "title"]
    assert isinstance(outcomes[20].problem, problems.ValidationFailed)  # status alone
    assert isinstance(outcomes[22].problem, problems.IdempotencyKeyReused)


async def test_a_rate_limited_client_waits_as_told_and_every_submit_lands(
    settings: Settings, keys: SqlKeyStore
) -> None:
    settings = settings.model_copy(
        update={"rate_limit": "5/second", "auth_enabled": True, "auth_cache_seconds": 0.0}
    )
    key, _ = await keys.create("acme", parse_scopes("submit,read"))
    async with running_api(settings) as api:
        counting = Counting()
        async with AsyncClient(str(api.base_url), key, retry=FAST, transport=counting) as conveyor:
            made = [await conveyor.submit(f"t{n}", kind="noop") for n in range(15)]
            assert len({task.id for task in made}) == 15
        assert 429 in counting.statuses  # refused, waited, and sent again
        await asyncio.sleep(1)  # the limit's window passes
        async with AsyncClient(str(api.base_url), key) as reader:
            stored = [task async for task in reader.list()]
        assert len(stored) == 15  # and never twice
        no_retry = AsyncClient(str(api.base_url), key, retry=Retry(attempts=1))
        async with no_retry:
            with pytest.raises(problems.RateLimited) as limited:
                for n in range(20):
                    await no_retry.submit(f"u{n}", kind="noop")
            assert limited.value.retry_after is not None and limited.value.retry_after > 0


async def test_a_client_waits_as_long_as_retry_after_says_within_its_timeout(
    settings: Settings, keys: SqlKeyStore
) -> None:
    settings = settings.model_copy(
        update={"rate_limit": "4/2seconds", "auth_enabled": True, "auth_cache_seconds": 0.0}
    )
    key, _ = await keys.create("acme", parse_scopes("submit,read"))
    four = [{"title": "t", "kind": "noop"}] * 4
    async with running_api(settings) as api:
        counting = Counting()
        # One more try, and a backoff of at most 1 s: but the server says 2 s.
        patient = AsyncClient(
            str(api.base_url), key, retry=Retry(attempts=2, cap=1.0), transport=counting
        )
        async with patient:
            await patient.submit_many(four)
            assert len(await patient.submit_many(four)) == 4  # refused, waited 2 s, sent again
        assert counting.statuses == [200, 429, 200]
        # A wait longer than the client's timeout is not waited for: the call fails at once.
        counting = Counting()
        hasty = AsyncClient(str(api.base_url), key, timeout=1.0, transport=counting)
        async with hasty:
            with pytest.raises(problems.RateLimited) as limited:
                await hasty.submit_many(four)
        assert counting.statuses == [429] and limited.value.retry_after == 2


def test_the_blocking_client_retries_until_the_api_comes_up(settings: Settings) -> None:
    port = free_port()
    settings = settings.model_copy(update={"api_port": port})
    url = f"http://127.0.0.1:{port}"
    later: list[Any] = []

    def start_late() -> None:
        later.append(start_process(settings, "api"))

    timer = threading.Timer(1.0, start_late)  # nothing listens yet: the first tries fail
    timer.start()
    try:
        with Client(url, retry=Retry(attempts=40, base=0.2, cap=1.0)) as conveyor:
            task = conveyor.submit("patient", kind="noop")
            assert conveyor.get(task.id).title == "patient"
            assert [t.id for t in conveyor.list(title="patient")] == [task.id]
    finally:
        timer.join()
        for process in later:
            process.terminate()
            process.wait(20)
    with (
        Client(url, retry=Retry(attempts=2, base=0.01)) as gone,
        pytest.raises(problems.Unreachable),
    ):
        gone.get(task.id)


@pytest.mark.private_broker
async def test_waiting_carries_on_through_a_broker_outage(
    settings: Settings, private_rabbit: Callable[..., PrivateRabbit]
) -> None:
    rabbit = private_rabbit()  # made, not started: the broker is away
    settings = settings.model_copy(update={"amqp_url": rabbit.url})
    async with running_api(settings) as api, running_worker(settings):
        async with AsyncClient(str(api.base_url), retry=FAST) as conveyor:
            task = await conveyor.submit("through the outage", kind="echo", payload={"n": 7})
            waiting = asyncio.create_task(conveyor.wait(task.id, timeout=60))
            await asyncio.sleep(1.0)
            assert not waiting.done() and (await conveyor.get(task.id)).status == "NEW"
            await asyncio.to_thread(rabbit.start)
            done = await waiting
    assert (done.status, done.result) == ("COMPLETED", {"n": 7})


def test_a_blocking_client_with_a_bad_key_gets_one_clear_error(settings: Settings) -> None:
    port = free_port()
    settings = settings.model_copy(update={"api_port": port, "auth_enabled": True})
    process = start_process(settings, "api")
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process)
        with Client(f"http://127.0.0.1:{port}", key="cvk_abcdefghijkl_nope") as conveyor:
            with pytest.raises(problems.Unauthenticated) as refused:
                conveyor.whoami()
        assert refused.value.status == 401 and "key" in str(refused.value)
    finally:
        process.terminate()
        process.wait(20)
