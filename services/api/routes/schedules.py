"""/api/v1/schedules: tasks made at the due times of a cron expression, within the tenant."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.api.auth import Reader, Submitter
from services.api.deps import ServicesDep
from services.api.responses import errors, json_response
from services.api.routes.tasks import check_submission
from services.api.schemas import SCHEDULE_NAME, ScheduleCreate, ScheduleOut, SchedulePage

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"])


@router.post("", status_code=201, response_model=ScheduleOut, responses=errors(409, 413, 422))
async def create_schedule(
    body: ScheduleCreate, services: ServicesDep, principal: Submitter
) -> Response:
    """A schedule of the caller's tenant: from now on, each due time of its cron expression
    makes one task from its template, however many replicas run (409 for a name the tenant
    has, or past CONVEYOR_MAX_SCHEDULES_PER_TENANT)."""
    await services.kinds.ready((body.task.kind,))
    task = check_submission(body.task, services, ("body", "task"))
    schedule = await services.store.create_schedule(
        principal.tenant,
        body.name,
        body.cron,
        body.timezone,
        task,
        missed=body.missed,
        paused=body.paused,
        limit=services.settings.max_schedules_per_tenant,
    )
    services.scheduler.kick()
    return json_response(ScheduleOut.of(schedule), 201, Location=f"{router.prefix}/{schedule.id}")


@router.get("", response_model=SchedulePage, responses=errors(422))
async def list_schedules(
    services: ServicesDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(pattern=SCHEDULE_NAME, description="A page's next_cursor")
    ] = None,
) -> Response:
    """The tenant's schedules by name; follow `next_cursor` for the rest."""
    found = await services.store.schedules_of(principal.tenant, limit + 1, cursor)
    items = [ScheduleOut.of(schedule) for schedule in found[:limit]]
    more = len(found) > limit
    return json_response(SchedulePage(items=items, next_cursor=items[-1].name if more else None))


@router.get("/{schedule_id}", response_model=ScheduleOut, responses=errors(404, 422))
async def get_schedule(
    schedule_id: uuid.UUID, services: ServicesDep, principal: Reader
) -> Response:
    """One schedule, with its next due times."""
    return json_response(
        ScheduleOut.of(await services.store.schedule(schedule_id, principal.tenant))
    )


@router.post("/{schedule_id}:pause", response_model=ScheduleOut, responses=errors(404, 422))
async def pause_schedule(
    schedule_id: uuid.UUID, services: ServicesDep, principal: Submitter
) -> Response:
    """Stop making tasks; the tasks made stay as they are. Again is harmless."""
    schedule = await services.store.set_schedule_paused(schedule_id, True, principal.tenant)
    return json_response(ScheduleOut.of(schedule))


@router.post("/{schedule_id}:resume", response_model=ScheduleOut, responses=errors(404, 422))
async def resume_schedule(
    schedule_id: uuid.UUID, services: ServicesDep, principal: Submitter
) -> Response:
    """Make tasks again, from the first due time from now on: times passed while it was
    paused make none. Again is harmless."""
    schedule = await services.store.set_schedule_paused(schedule_id, False, principal.tenant)
    services.scheduler.kick()
    return json_response(ScheduleOut.of(schedule))


@router.delete("/{schedule_id}", status_code=204, responses=errors(404, 422))
async def delete_schedule(
    schedule_id: uuid.UUID, services: ServicesDep, principal: Submitter
) -> Response:
    """Delete the schedule; the tasks it made stay."""
    await services.store.delete_schedule(schedule_id, principal.tenant)
    return Response(status_code=204)
