"""A handler's second argument: which task and attempt, for whom, by when, and progress."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.core.kinds import TaskContext, kind
from services.core.settings import Settings
from tests.support import kinds
from tests.support.services import running_api, running_worker, submit, wait_for


async def test_progress_is_visible_while_the_handler_runs_and_context_names_the_task(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"task_modules": ["tests.support.kinds"], "heartbeat_seconds": 0.1}
    )
    key = uuid.uuid4().hex
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="progressing", payload={"key": key}, timeout_seconds=60)
        running = await wait_for(api, task["id"], {"IN_PROGRESS"})
        for _ in range(100):
            running = (await api.get(f"/api/v1/tasks/{task['id']}")).json()
            if running["progress"] is not None:
                break
            await asyncio.sleep(0.05)
        assert running["status"] == "IN_PROGRESS"
        assert running["progress"] == {"fraction": 0.5, "note": "halfway"}
        kinds.release.setdefault(key, asyncio.Event()).set()
        done = await wait_for(api, task["id"])
    assert done["status"] == "COMPLETED"
    result = done["result"]
    assert (result["id"], result["attempt"], result["tenant"], result["queue"]) == (
        task["id"],
        1,
        "default",
        "default",
    )
    assert 50 < result["seconds_left"] <= 60
    assert done["progress"] == {"fraction": 0.5, "note": "halfway"}  # kept once finished


async def test_the_last_progress_is_kept_when_the_handler_returns_before_a_heartbeat(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"task_modules": ["tests.support.kinds"], "heartbeat_seconds": 10}
    )
    async with running_api(settings) as api, running_worker(settings):
        done = await wait_for(api, (await submit(api, kind="finishing"))["id"])
    assert (done["status"], done["progress"]) == ("COMPLETED", {"fraction": 1.0, "note": "done"})


@pytest.mark.unit
def test_a_handler_of_one_argument_keeps_working_and_bad_progress_is_refused() -> None:
    @kind("one_argument")
    async def plain(payload: dict[str, object]) -> None:
        return None

    @kind("two_arguments")
    async def with_context(payload: dict[str, object], context: TaskContext) -> None:
        return None

    assert not plain.__conveyor_kind__.takes_context  # type: ignore[attr-defined]
    assert with_context.__conveyor_kind__.takes_context  # type: ignore[attr-defined]
    context = TaskContext(uuid.uuid4(), 1, "t", "default", None, None)  # type: ignore[arg-type]
    for fraction in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="fraction"):
            context.progress(fraction)  # type: ignore[arg-type]
    context.progress(1, "x" * 500)
    assert context.reported == {"fraction": 1.0, "note": "x" * 200}
