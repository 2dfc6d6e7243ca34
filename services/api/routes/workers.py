"""/api/v1/workers: the worker processes of the installation, from the worker registry.

Workers serve every tenant, so reading them needs the platform scope, as the queues do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.api.auth import Platform
from services.api.deps import ServicesDep
from services.api.responses import errors, json_response
from services.api.routes.tasks import known_queue
from services.api.schemas import WorkerOut, WorkerPage
from services.core.db.workers import WorkerSeen
from services.core.domain import QUEUE_NAME

router = APIRouter(prefix="/api/v1/workers", tags=["workers"])


@router.get("", response_model=WorkerPage, responses=errors(422))
async def list_workers(
    services: ServicesDep,
    _: Platform,
    queue: Annotated[
        str | None, Query(pattern=QUEUE_NAME, description="Only the workers that consume it")
    ] = None,
) -> Response:
    """Every worker process, alive, draining or gone, by id."""
    known_queue(queue, services, ("query", "queue"))
    workers = await services.store.workers(queue)
    return json_response(WorkerPage(items=[_out(worker) for worker in workers]))


def _out(worker: WorkerSeen) -> WorkerOut:
    return WorkerOut(
        id=worker.id,
        host=worker.host,
        version=worker.version,
        queues=worker.queues,
        kinds=worker.kinds,
        concurrency=worker.concurrency,
        running=worker.running,
        state=worker.state,
        started_at=worker.started_at,
        last_seen_at=worker.last_seen_at,
    )
