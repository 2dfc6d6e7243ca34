"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.api.deps import Services
from services.api.errors import problem
from services.core.errors import StoreUnavailable

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/ready",
    responses={
        503: {
            "description": (
                "PostgreSQL or RabbitMQ is unreachable, or a background loop keeps failing"
            )
        }
    },
)
async def ready(request: Request) -> JSONResponse:
    """200 when PostgreSQL (at the expected schema) and RabbitMQ answer and no background
    loop (relay, recovery) keeps failing; else 503 naming which."""
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
    failing = services.supervisor.failing()
    if failed or failing:
        detail = "; ".join(
            [f"unreachable: {', '.join(failed)}"] * bool(failed)
            + [f"failing: {', '.join(failing)}"] * bool(failing)
        )
        return problem(503, detail, slug="not-ready", headers={"Retry-After": "5"})
    return JSONResponse({"status": "ok", "postgresql": "ok", "rabbitmq": "ok"})
