"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.api.deps import Services
from services.api.errors import problem
from services.api.problems import ProblemType
from services.core.errors import StoreUnavailable

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live(request: Request) -> dict[str, str | list[str]]:
    """200 while the process answers, naming the background loops that keep failing.

    A failing loop does not fail liveness: every API pod runs the same loops on the same
    rows, so a bad row would restart them all, in a loop, and mend nothing. It is counted
    (`conveyor_loop_failing`, `conveyor_background_errors_total`) and alerted on instead.
    A process that hangs does not answer, and is restarted.
    """
    services: Services = request.state.services
    failing = services.supervisor.failing()
    return {"status": "ok", "failing": failing} if failing else {"status": "ok"}


@router.get(
    "/ready",
    responses={
        503: {"description": "PostgreSQL (or its expected schema) or RabbitMQ is unreachable"}
    },
)
async def ready(request: Request) -> JSONResponse:
    """200 when this pod can serve: PostgreSQL (at the expected schema) and RabbitMQ
    answer; else 503 naming which. A background loop that keeps failing is not this pod's
    to answer for (see /health/live)."""
    services: Services = request.state.services
    failed = []
    try:
        await services.store.ping()
    except StoreUnavailable:
        failed.append("postgresql")
    else:
        if not services.schema_ready.is_set():
            failed.append("postgresql schema (not migrated to the expected revision)")
    if not services.broker.ready:
        failed.append("rabbitmq")
    if failed:
        detail = f"unreachable: {', '.join(failed)}"
        return problem(
            503, detail, problem_type=ProblemType.NOT_READY, headers={"Retry-After": "5"}
        )
    return JSONResponse({"status": "ok", "postgresql": "ok", "rabbitmq": "ok"})
