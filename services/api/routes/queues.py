"""/api/v1/queues: the installation's queues, their backlog, pause and resume.

Every route needs the platform scope, which only keys the platform made hold: a tenant's
admin cannot stop other tenants' work.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response

from services.api.auth import Platform
from services.api.deps import ServicesDep
from services.api.errors import Refused
from services.api.problems import ProblemType
from services.api.responses import errors, json_response
from services.api.schemas import QueueOut, QueuePage
from services.core.db.queues import QueueState
from services.core.domain import QUEUE_NAME, Priority, Queue

router = APIRouter(prefix="/api/v1/queues", tags=["queues"])
QueueName = Annotated[str, Path(pattern=QUEUE_NAME, description="A queue of the settings")]


@router.get("", response_model=QueuePage, responses=errors())
async def list_queues(services: ServicesDep, _: Platform) -> Response:
    """Every queue of the settings, with its backlog and state."""
    states = await services.store.queue_states(services.queues)
    now = datetime.now(UTC)
    return json_response(QueuePage(items=[_out(services.queues[s.name], s, now) for s in states]))


@router.post("/{name}:pause", response_model=QueueOut, responses=errors(404, 422))
async def pause_queue(name: QueueName, services: ServicesDep, _: Platform) -> Response:
    """Stop starting the queue's tasks: they stay queued, running ones finish."""
    return await _set_paused(name, True, services)


@router.post("/{name}:resume", response_model=QueueOut, responses=errors(404, 422))
async def resume_queue(name: QueueName, services: ServicesDep, _: Platform) -> Response:
    """Start the queue's tasks again."""
    return await _set_paused(name, False, services)


async def _set_paused(name: str, paused: bool, services: ServicesDep) -> Response:
    queue = services.queues.get(name)
    if queue is None:
        detail = f"no queue {name!r}; known: {', '.join(sorted(services.queues))}"
        raise Refused(404, ProblemType.QUEUE_NOT_FOUND, detail, loc=["path", "name"])
    await services.store.set_paused(name, paused)
    (state,) = await services.store.queue_states([name])
    return json_response(_out(queue, state, datetime.now(UTC)))


def _out(queue: Queue, state: QueueState, now: datetime) -> QueueOut:
    return QueueOut(
        name=queue.name,
        paused=state.paused,
        max_running=queue.max_running,
        rate=queue.rate,
        queued={priority: state.queued.get(priority, 0) for priority in Priority},
        running=state.running,
        oldest_ready_seconds=state.oldest_ready_seconds(now),
    )
