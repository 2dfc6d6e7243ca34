"""/api/v1/whoami and /api/v1/overview: what the console shows first."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.api.auth import Anyone, Reader
from services.api.deps import ServicesDep
from services.api.responses import errors, json_response
from services.api.schemas import MinuteOut, OverviewOut, QueueActivityOut, WhoAmI
from services.core.auth import Scope
from services.core.domain import Priority

router = APIRouter(prefix="/api/v1", tags=["overview"])


@router.get("/whoami", response_model=WhoAmI, responses=errors())
async def whoami(services: ServicesDep, principal: Anyone) -> Response:
    """The caller's tenant and the scopes of its key: what a client may offer to do."""
    return json_response(
        WhoAmI(
            tenant=principal.tenant,
            key_id=principal.key_id,
            scopes=sorted(principal.scopes, key=list(Scope).index),
            auth_enabled=services.settings.auth_enabled,
        )
    )


@router.get("/overview", response_model=OverviewOut, responses=errors())
async def overview(services: ServicesDep, principal: Reader) -> Response:
    """The caller's tasks on each queue: ready ones by priority, running ones, how long the
    oldest ready one has waited, and per minute over the last 15 minutes how many started,
    completed and failed. Bounded reads: as fast with millions of tasks as with few."""
    activity = await services.store.activity(principal.tenant, list(services.queues))
    return json_response(
        OverviewOut(
            queues=[
                QueueActivityOut(
                    name=queue.name,
                    paused=queue.paused,
                    ready={priority: queue.ready.get(priority, 0) for priority in Priority},
                    running=queue.running,
                    oldest_ready_seconds=(
                        max((activity.now - queue.oldest_ready_at).total_seconds(), 0.0)
                        if queue.oldest_ready_at
                        else None
                    ),
                    minutes=[
                        MinuteOut(
                            at=m.at, started=m.started, completed=m.completed, failed=m.failed
                        )
                        for m in queue.minutes
                    ],
                )
                for queue in activity.queues
            ],
            window_complete=activity.window_complete,
        )
    )
