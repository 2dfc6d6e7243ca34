"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.api.deps import ServicesDep
from services.api.errors import problem
from services.core.errors import StoreUnavailable

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "PostgreSQL or RabbitMQ is unreachable"}})
async def ready(services: ServicesDep) -> JSONResponse:
    """200 when PostgreSQL and RabbitMQ answer; else 503 naming which one failed."""
    failed = []
    try:
        await services.store.ping()
    except StoreUnavailable:
        failed.append("postgresql")
    if not services.broker.ready:
        failed.append("rabbitmq")
    if failed:
        return problem(503, f"unreachable: {', '.join(failed)}", slug="not-ready",
                       headers={"Retry-After": "5"})
    return JSONResponse({"status": "ok", "postgresql": "ok", "rabbitmq": "ok"})
