"""/api/v1/schedules: one task per due time, across replicas and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.core.db.store import SqlTaskStore
from services.core.domain import Missed, NewTask
from services.core.settings import Settings
from tests.support.database import execute, fetch
from tests.support.processes import start_process, worker_log
from tests.support.services import running_api, running_worker, wait_for

EVERY_SECOND = "* * * * * *"


def _body(**fields: Any) -> dict[str, Any]:
    return {
        "name": f"s-{uuid.uuid4().hex[:8]}",
        "cron": "0 9 * * MON-FRI",
        "task": {"title": "nightly report", "kind": "noop", "priority": "HIGH"},
        **fields,
    }


async def _create(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/schedules", json=_body(**fields))
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/api/v1/schedules/{response.json()['id']}"
    return response.json()  # type: ignore[no-any-return]


async def _made(settings: Settings, schedule_id: str) -> list[Any]:
    """The tasks a schedule made: (scheduled_at, idempotency_key), by due time."""
    return list(
        await fetch(
            settings.database_url,
            "SELECT scheduled_at, idempotency_key, status FROM tasks"
            " WHERE idempotency_key LIKE $1 ORDER BY scheduled_at",
            f"schedule:{schedule_id}:%",
        )
    )


@contextlib.contextmanager
def _relays(settings: Settings, count: int) -> Iterator[list[subprocess.Popen[str]]]:
    processes = [start_process(settings, "relay") for _ in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


async def test_a_schedule_every_second_for_ten_seconds_with_three_relays_makes_ten_tasks(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"api_run_relay": False})  # the relays alone fire
    with _relays(settings, 3) as relays:
        async with running_api(settings) as api:
            probe = await _create(api, cron=EVERY_SECOND)  # all three relays are up and firing
            deadline = time.monotonic() + 60
            while not await _made(settings, probe["id"]):
                assert time.monotonic() < deadline, [worker_log(r) for r in relays]
                await asyncio.sleep(0.1)
            await api.delete(f"/api/v1/schedules/{probe['id']}")
            await asyncio.sleep(1)

            schedule = await _create(api, cron=EVERY_SECOND)
            created = datetime.fromisoformat(schedule["created_at"])
            await asyncio.sleep(10 - (datetime.now(UTC) - created).total_seconds())
            paused = await api.post(f"/api/v1/schedules/{schedule['id']}:pause")
            assert paused.json()["paused"] and paused.json()["next_run_at"] is None
            stopped = datetime.fromisoformat(paused.json()["updated_at"])
            await asyncio.sleep(1.5)  # nothing more comes
            made = await _made(settings, schedule["id"])
    due = [row["scheduled_at"] for row in made]
    first = created.replace(microsecond=0) + timedelta(seconds=1)
    expected = [first + timedelta(seconds=n) for n in range(10)]
    assert stopped - created >= timedelta(seconds=10)
    assert due == [moment for moment in expected if moment <= stopped], due
    assert len(due) == 10
    assert len({row["idempotency_key"] for row in made}) == 10
    assert all(row["status"] in ("NEW", "PENDING") for row in made)


async def test_a_schedule_is_made_read_listed_paused_resumed_and_deleted(
    api: httpx.AsyncClient,
) -> None:
    made = await _create(
        api, name="weekday-report", timezone="Europe/Berlin", task={"title": "r", "kind": "noop"}
    )
    assert made["missed"] == "skip" and made["paused"] is False
    assert made["task"] == {
        "title": "r",
        "description": "",
        "priority": "MEDIUM",
        "kind": "noop",
        "payload": {},
        "max_attempts": 3,
        "timeout_seconds": None,
        "queue": "default",
    }
    runs = [datetime.fromisoformat(moment) for moment in made["next_runs"]]
    assert len(runs) == 5 and runs == sorted(runs)
    for run in runs:  # 9:00 in Berlin, on weekdays, with Berlin's offset
        assert (run.hour, run.minute, run.weekday() < 5) == (9, 0, True)
        assert run.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    assert datetime.fromisoformat(made["next_run_at"]) == runs[0]
    assert (await api.get(f"/api/v1/schedules/{made['id']}")).json() == made

    paused = (await api.post(f"/api/v1/schedules/{made['id']}:pause")).json()
    assert (paused["paused"], paused["next_run_at"], paused["next_runs"]) == (True, None, [])
    again = (await api.post(f"/api/v1/schedules/{made['id']}:pause")).json()
    assert again == paused
    resumed = (await api.post(f"/api/v1/schedules/{made['id']}:resume")).json()
    assert resumed["paused"] is False and resumed["next_runs"] == made["next_runs"]

    names = ["a", "b", "c"]
    for name in names:
        await _create(api, name=name)
    page = (await api.get("/api/v1/schedules", params={"limit": 2})).json()
    assert [s["name"] for s in page["items"]] == ["a", "b"] and page["next_cursor"] == "b"
    rest = (await api.get("/api/v1/schedules", params={"cursor": "b"})).json()
    assert [s["name"] for s in rest["items"]] == ["c", "weekday-report"]
    assert rest["next_cursor"] is None

    assert (await api.delete(f"/api/v1/schedules/{made['id']}")).status_code == 204
    gone = await api.get(f"/api/v1/schedules/{made['id']}")
    assert gone.status_code == 404 and gone.json()["type"].endswith(":schedule-not-found")
    assert (await api.delete(f"/api/v1/schedules/{made['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"cron": "61 * * * *"}, ["body", "cron"]),
        ({"cron": "0 0 30 2 *"}, ["body", "cron"]),
        ({"cron": "every day"}, ["body", "cron"]),
        ({"timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ({"missed": "all"}, ["body", "missed"]),
        ({"name": "no spaces"}, ["body", "name"]),
        ({"task": {"title": "t", "kind": "no-such-kind"}}, ["body", "task", "kind"]),
        ({"task": {"title": "t", "queue": "nowhere"}}, ["body", "task", "queue"]),
        ({"task": {"title": "t", "scheduled_at": "2030-01-01T00:00:00Z"}}, None),
    ],
)
async def test_a_bad_schedule_is_refused_naming_the_field_and_nothing_is_stored(
    api: httpx.AsyncClient, settings: Settings, fields: dict[str, Any], where: list[str] | None
) -> None:
    response = await api.post("/api/v1/schedules", json=_body(**fields))
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["errors"]]
    assert where in locations if where else locations[0][:2] == ["body", "task"]
    assert (await fetch(settings.database_url, "SELECT count(*) AS n FROM schedules"))[0]["n"] == 0


async def test_a_name_is_taken_once_per_tenant_and_a_tenant_has_a_bounded_number(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"max_schedules_per_tenant": 3})
    async with running_api(settings) as api:
        await _create(api, name="one")
        taken = await api.post("/api/v1/schedules", json=_body(name="one"))
        assert taken.status_code == 409 and taken.json()["type"].endswith(":schedule-name-taken")
        await asyncio.gather(*(_create(api) for _ in range(2)))
        full = await asyncio.gather(
            *(api.post("/api/v1/schedules", json=_body()) for _ in range(3))
        )
        assert {answer.status_code for answer in full} == {409}
        assert full[0].json()["type"].endswith(":too-many-schedules")
        assert len((await api.get("/api/v1/schedules")).json()["items"]) == 3


@pytest.mark.parametrize("cron", ["30 2 * * *", "0 30 2 * * *"])
async def test_next_runs_keep_one_time_a_day_across_daylight_saving_with_five_or_six_fields(
    api: httpx.AsyncClient, settings: Settings, cron: str
) -> None:
    made = await _create(api, cron=cron, timezone="Europe/Berlin")
    # Berlin in 2099: 29 March 02:00 becomes 03:00; 25 October 03:00 becomes 02:00 again.
    for due, runs in [
        (
            "2099-03-28T01:30:00+00:00",
            ["2099-03-28T02:30:00+01:00", "2099-03-29T03:00:00+02:00", "2099-03-30T02:30:00+02:00"],
        ),
        (
            "2099-10-24T00:30:00+00:00",
            ["2099-10-24T02:30:00+02:00", "2099-10-25T02:30:00+02:00", "2099-10-26T02:30:00+01:00"],
        ),
    ]:
        await execute(
            settings.database_url,
            "UPDATE schedules SET next_run_at = $2 WHERE id = $1",
            uuid.UUID(made["id"]),
            datetime.fromisoformat(due),
        )
        got = (await api.get(f"/api/v1/schedules/{made['id']}")).json()["next_runs"][:3]
        assert [datetime.fromisoformat(moment) for moment in got] == [
            datetime.fromisoformat(run) for run in runs
        ]
        assert [moment[-6:] for moment in got] == [run[-6:] for run in runs]


async def _schedule(store: SqlTaskStore, settings: Settings, missed: Missed) -> uuid.UUID:
    """A yearly schedule (1 January, 00:00 UTC) whose schedulers were away since 2020."""
    made = await store.create_schedule(
        "default", f"yearly-{missed}", "0 0 1 1 *", "UTC", NewTask("new year"), missed=missed
    )
    await execute(
        settings.database_url,
        "UPDATE schedules SET next_run_at = '2020-01-01T00:00:00Z' WHERE id = $1",
        made.id,
    )
    return made.id


async def test_due_times_missed_while_no_scheduler_ran_are_skipped_or_run_once(
    store: SqlTaskStore, settings: Settings
) -> None:
    skipped = await _schedule(store, settings, Missed.SKIP)
    once = await _schedule(store, settings, Missed.RUN_ONCE)
    fired = await store.fire_due(timedelta(seconds=60))
    assert (fired.schedules, fired.tasks) == (2, 1)
    assert fired.missed >= 2 * 7 - 1  # 2020 to 2026: seven New Years each, one run
    assert await _made(settings, str(skipped)) == []
    (run,) = await _made(settings, str(once))
    this_year = datetime.now(UTC).replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    assert run["scheduled_at"] == this_year and run["status"] == "NEW"
    for schedule_id in (skipped, once):
        schedule = await store.schedule(schedule_id)
        assert schedule.next_run_at == this_year.replace(year=this_year.year + 1)
    assert (await store.fire_due(timedelta(seconds=60))).schedules == 0  # nothing is due


async def test_schedulers_racing_on_a_backlog_make_each_due_time_once(
    store: SqlTaskStore, settings: Settings
) -> None:
    made = await store.create_schedule("default", "busy", EVERY_SECOND, "UTC", NewTask("tick"))
    await execute(
        settings.database_url,
        "UPDATE schedules SET next_run_at = date_trunc('second', now()) - interval '45 s'"
        " WHERE id = $1",
        made.id,
    )
    rounds = await asyncio.gather(
        *(store.fire_due(timedelta(seconds=60), most_runs=7) for _ in range(12))
    )
    while (fired := await store.fire_due(timedelta(seconds=60), most_runs=7)).tasks:
        rounds.append(fired)
    tasks = await _made(settings, str(made.id))
    due = [row["scheduled_at"] for row in tasks]
    assert len(due) == len(set(due)) == sum(r.tasks for r in rounds) >= 45
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(due))


async def test_scheduled_tasks_run_on_a_worker(settings: Settings) -> None:
    async with running_api(settings) as api, running_worker(settings):
        schedule = await _create(api, cron=EVERY_SECOND)
        deadline = time.monotonic() + 15
        while not (made := await _made(settings, schedule["id"])):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        task = (await api.get("/api/v1/tasks", params={"kind": "noop", "limit": 1})).json()
        finished = await wait_for(api, task["items"][0]["id"])
        assert finished["status"] == "COMPLETED" and finished["priority"] == "HIGH"
        assert made[0]["idempotency_key"].startswith(f"schedule:{schedule['id']}:")
        got = (await api.get(f"/api/v1/schedules/{schedule['id']}")).json()
        assert got["last_run_at"] is not None and got["last_task_id"] is not None
