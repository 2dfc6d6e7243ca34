"""Supervised background work: a failing pass of any loop (relay, recovery sweep, gauges,
heartbeat, consumer) is counted and survived, and delivery goes on; a loop that keeps failing
shows in the process's liveness details and metrics; a worker whose loops keep failing is
not live, an API pod stays ready."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.core import recovery, supervision
from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask
from services.core.relay import Relay
from services.core.settings import Settings
from services.core.supervision import Supervisor
from services.worker.main import open_worker, serve_metrics
from services.worker.runner import Worker
from tests.support.services import free_port, running_api, running_worker, submit, wait_for
from tests.support.store import claim_one, create


def _errors(loop: str) -> float:
    value = REGISTRY.get_sample_value("conveyor_background_errors_total", {"loop": loop})
    return value or 0.0


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back off in tens of milliseconds: the tests wait for the passes, not for the pauses."""
    monkeypatch.setattr(supervision, "BACKOFF_FIRST", 0.02)
    monkeypatch.setattr(supervision, "BACKOFF_MAX", 0.1)


def _failing_first(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, times: int
) -> list[int]:
    """Make `owner.name` raise a bug (TypeError) on its first `times` calls, then work."""
    original = getattr(owner, name)
    calls: list[int] = []

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise TypeError(f"injected failure {len(calls)} of {name}")
        return await original(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)
    return calls


@pytest.mark.unit
async def test_a_pass_that_raises_is_counted_backed_off_and_reported_until_one_works() -> None:
    supervisor = Supervisor()
    passes: Iterator[str] = iter(["bug", "bug", "bug", "works", "stop"])
    failing_seen: list[list[str]] = []
    flagged: list[float | None] = []
    pauses: list[tuple[str, float]] = []

    async def step() -> float:
        failing_seen.append(supervisor.failing())
        flagged.append(REGISTRY.get_sample_value("conveyor_loop_failing", {"loop": "relay"}))
        what = next(passes)
        if what == "bug":
            raise RuntimeError("a bug")
        if what == "stop":
            raise asyncio.CancelledError
        return 0.01

    async def pause(seconds: float) -> None:
        pauses.append(("rest", seconds))

    async def back_off(seconds: float) -> None:
        pauses.append(("back off", seconds))

    before = _errors("relay")
    with pytest.raises(asyncio.CancelledError):
        await supervisor.run("relay", step, pause, back_off=back_off)
    assert _errors("relay") - before == 3
    # Backing off, doubling, where no kick cuts it short; then the rest the pass asked.
    assert pauses == [("back off", 0.02), ("back off", 0.04), ("back off", 0.08), ("rest", 0.01)]
    # Named as failing once its last three passes failed, and no longer after one worked.
    assert failing_seen == [[], [], [], ["relay"], []]
    assert flagged == [0, 0, 0, 1, 0]


@pytest.mark.unit
async def test_an_outage_is_waited_out_and_is_not_a_failing_loop() -> None:
    supervisor = Supervisor()
    passes: list[int] = []

    async def step() -> float:
        passes.append(1)
        if len(passes) <= 5:
            raise supervision.StoreUnavailable("PostgreSQL is restarting")
        raise asyncio.CancelledError

    before = _errors("recovery")
    with pytest.raises(asyncio.CancelledError):
        await supervisor.run("recovery", step)
    assert supervisor.failing() == []
    assert _errors("recovery") == before


async def test_the_relay_survives_failing_passes_and_delivers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _failing_first(monkeypatch, Relay, "relay_once", 3)
    before = _errors("relay")
    settings = settings.model_copy(update={"api_publish": False})  # the relay delivers
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="noop")
        assert (await wait_for(api, task["id"]))["status"] == "COMPLETED"
    assert len(calls) > 3
    assert _errors("relay") - before == 3


async def test_the_recovery_sweep_survives_failing_passes_and_recovers(
    settings: Settings, store: SqlTaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _failing_first(monkeypatch, recovery, "recover", 3)
    before = _errors("recovery")
    settings = settings.model_copy(update={"lease_seconds": 0.5})
    # A worker that died holding a task: its lease runs out, and only the sweep frees it.
    await create(store, NewTask(title="orphan", kind="noop"))
    await store.confirm_queued(list(await store.reserve_due(10)))
    orphan = await claim_one(store, "dead-worker", lease=0.5)
    assert orphan is not None
    async with running_api(settings) as api, running_worker(settings):
        done = await wait_for(api, str(orphan.task.id), timeout=30)
    assert done["status"] == "COMPLETED" and done["attempts"] == 2
    assert len(calls) > 3
    assert _errors("recovery") - before == 3


async def test_the_heartbeat_survives_failing_passes_and_keeps_the_lease(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three failed renewals in a row still fit in the lease; the task is not taken over.
    settings = settings.model_copy(update={"lease_seconds": 2.0})
    calls = _failing_first(monkeypatch, SqlTaskStore, "heartbeat", 3)
    before = _errors("heartbeat")
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="sleep", payload={"seconds": 3.0})
        done = await wait_for(api, task["id"], timeout=30)
    assert done["status"] == "COMPLETED" and done["attempts"] == 1
    assert len(calls) > 3
    assert _errors("heartbeat") - before == 3


async def test_the_consumer_survives_failing_passes_and_takes_tasks(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _failing_first(monkeypatch, Worker, "_consume", 3)
    before = _errors("consume")
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="noop")
        assert (await wait_for(api, task["id"]))["status"] == "COMPLETED"
    assert len(calls) > 3
    assert _errors("consume") - before == 3


async def test_a_failing_gauges_read_is_counted_and_metrics_still_answer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing_first(monkeypatch, SqlTaskStore, "gauges", 1)
    before = _errors("gauges")
    async with running_api(settings) as api:
        response = await api.get("/metrics")
    assert response.status_code == 200
    assert "conveyor_background_errors_total" in response.text
    assert _errors("gauges") - before == 1


async def test_a_relay_that_keeps_failing_on_data_leaves_the_api_ready_and_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every API pod runs the same loops on the same rows: a bad row that broke readiness
    # would take every pod out of the Service at once. It shows in liveness and metrics.
    _failing_first(monkeypatch, Relay, "relay_once", 10**9)
    async with running_api(settings) as api:
        live = await _until(
            lambda: api.get("/health/live"), lambda r: r.json().get("failing") == ["relay"]
        )
        ready = await api.get("/health/ready")
        metrics = await api.get("/metrics")
    assert live.status_code == 200
    assert live.json() == {"status": "ok", "failing": ["relay"]}
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "postgresql": "ok", "rabbitmq": "ok"}
    assert 'conveyor_loop_failing{loop="relay"} 1.0' in metrics.text
    assert 'conveyor_loop_failing{loop="schedules"} 0.0' in metrics.text


async def test_a_worker_whose_consumer_keeps_failing_is_not_live(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing_first(monkeypatch, Worker, "_consume", 10**9)
    supervisor, port = Supervisor(), free_port()
    serve_metrics(port, supervisor)
    url = f"http://127.0.0.1:{port}/health/live"
    assert await asyncio.to_thread(_status, url) == (200, b'{"status": "ok"}')
    async with open_worker(settings, supervisor) as worker:
        working = asyncio.create_task(worker.run())
        try:
            _, body = await _until(
                lambda: asyncio.to_thread(_status, url), lambda answer: answer[0] == 503
            )
        finally:
            worker.stop()
            await working
    assert json.loads(body) == {"status": "failing", "failing": ["consume"]}


def _status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def _until(
    ask: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], within: float = 15
) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while not done(answer := await ask()):
        assert asyncio.get_running_loop().time() < deadline, f"still {answer!r}"
        await asyncio.sleep(0.05)
    return answer
