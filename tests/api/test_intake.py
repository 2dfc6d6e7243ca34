"""The way in: single submits share group commits, and the API queues its tasks itself."""

from __future__ import annotations

import asyncio
from typing import Any

from services.api.intake import Intake
from services.core.domain import NewTask, Status, Submission, TaskFilter
from services.core.relay import Relay
from services.core.runtime import open_clients
from services.core.settings import Settings
from tests.support.services import running_api, running_worker, submit, wait_for


async def test_a_submitted_task_is_queued_by_the_api_itself_without_a_relay(
    settings: Settings,
) -> None:
    """No relay runs anywhere: only the API's own publish after the commit can queue it."""
    quiet = settings.model_copy(update={"api_run_relay": False, "api_run_recovery": False})
    async with running_api(quiet) as api:
        task = await submit(api, kind="noop")
        queued = await wait_for(api, task["id"], {"PENDING"}, timeout=10)
        assert queued["status"] == "PENDING"
        async with running_worker(quiet):
            done = await wait_for(api, task["id"])
    assert done["status"] == "COMPLETED"


async def test_with_publishing_off_only_the_relay_sends(settings: Settings) -> None:
    quiet = settings.model_copy(update={"api_run_relay": False, "api_publish": False})
    async with running_api(quiet) as api:
        task = await submit(api, kind="noop")
        async with running_worker(quiet) as worker:
            await worker.idle()
            assert (await api.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "NEW"
    relayed = quiet.model_copy(update={"api_run_relay": True})
    async with running_api(relayed) as api, running_worker(relayed):
        assert (await wait_for(api, task["id"]))["status"] == "COMPLETED"


async def test_concurrent_submits_share_statements_and_each_gets_its_own_task(
    settings: Settings,
) -> None:
    async with open_clients(settings) as clients:
        await clients.broker.connected.wait()
        sizes: list[int] = []
        create_many = clients.store.create_many

        async def counted(submissions: Any, **options: Any) -> Any:
            sizes.append(len(submissions))
            return await create_many(submissions, **options)

        clients.store.create_many = counted  # type: ignore[method-assign]
        intake = Intake(
            clients.store,
            clients.broker,
            Relay.from_settings(clients.store, clients.broker, settings),
            settings.relay_batch,
        )
        titles = [f"task {n}" for n in range(64)]
        answers = await asyncio.gather(
            *(intake.submit(Submission(NewTask(title, kind="noop"))) for title in titles)
        )
        assert [task.title for task, created in answers if created] == titles
        assert sum(sizes) == 64 and len(sizes) < 64 and max(sizes) > 1
        for task, _ in answers:
            stored = await clients.store.get(task.id)
            assert stored.title == task.title


async def test_a_task_postgresql_refuses_fails_alone_not_its_whole_group(
    settings: Settings,
) -> None:
    async with open_clients(settings) as clients:
        await clients.broker.connected.wait()
        intake = Intake(
            clients.store,
            clients.broker,
            Relay.from_settings(clients.store, clients.broker, settings),
            settings.relay_batch,
        )
        # PostgreSQL's jsonb refuses \u0000 in a string (the API's models refuse it first).
        payloads: list[dict[str, Any]] = [{"n": 1}, {"bad": "\u0000"}, {"n": 2}]
        outcomes = await asyncio.gather(
            *(
                intake.submit(Submission(NewTask("t", kind="noop", payload=payload)))
                for payload in payloads
            ),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], Exception)
        good = [outcomes[0], outcomes[2]]
        for outcome in good:
            assert not isinstance(outcome, BaseException)
            task, created = outcome
            assert created and (await clients.store.get(task.id)).status in {
                Status.NEW,
                Status.PENDING,
            }
        assert len((await clients.store.page(TaskFilter(), 10)).items) == 2
