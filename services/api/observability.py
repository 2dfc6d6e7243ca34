"""The API's metrics: HTTP requests by route template, and the database-wide gauges."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.deps import Services
from services.core.domain import Priority
from services.core.errors import StoreUnavailable
from services.core.telemetry.metrics import (
    BACKGROUND_ERRORS,
    GAUGES_REFRESHED,
    GAUGES_UP,
    HTTP_DURATION,
    HTTP_REQUESTS,
    LEASE_EXPIRED,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    QUEUE_DEPTH,
    QUEUE_OLDEST_READY,
    QUEUE_PAUSED,
    QUEUE_TASKS,
    QUEUE_WORKER_SLOTS,
    WORKERS,
)

logger = logging.getLogger(__name__)
router = APIRouter()

GAUGES_SECONDS = 1.0
# Unmatched paths share one label, so a scan of random URLs cannot grow the series.
_UNMATCHED = "unmatched"


class HttpMetrics:
    """Count and time every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            route = getattr(scope.get("route"), "path", _UNMATCHED)
            HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
            HTTP_DURATION.labels(route, scope["method"]).observe(time.perf_counter() - started)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format; the database-wide gauges are read at most once a second,
    so that a flood of scrapes (the endpoint needs no key) cannot load PostgreSQL."""
    services: Services = request.state.services
    now = time.monotonic()
    if now - getattr(request.app.state, "gauges_read_at", -GAUGES_SECONDS) >= GAUGES_SECONDS:
        request.app.state.gauges_read_at = now
        try:
            await asyncio.wait_for(_read_gauges(services), timeout=5)
        except (StoreUnavailable, TimeoutError) as error:
            GAUGES_UP.set(0)
            logger.warning("database gauges not refreshed: %s", error)
        except Exception:  # a bad read must not take the process's own metrics with it
            GAUGES_UP.set(0)
            BACKGROUND_ERRORS.labels("gauges").inc()
            logger.exception("database gauges not refreshed")
        else:
            GAUGES_UP.set(1)
            GAUGES_REFRESHED.set_to_current_time()
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


def _registry() -> CollectorRegistry:
    """This process's metrics; in a pod of several API processes, those of all of them,
    from the multiprocess files their parent gave them (services/api/processes.py)."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


async def _read_gauges(services: Services) -> None:
    gauges = await services.store.gauges()
    OUTBOX_BACKLOG.set(gauges.outbox_backlog)
    OUTBOX_OLDEST_AGE.set(gauges.outbox_oldest_age)
    LEASE_EXPIRED.set(gauges.lease_expired)
    for (priority, state), count in gauges.depth.items():
        QUEUE_DEPTH.labels(priority, state).set(count)
    now = datetime.now(UTC)
    for queue in await services.store.queue_states(services.queues):
        QUEUE_TASKS.labels(queue.name, "queued").set(sum(queue.queued.values()))
        QUEUE_TASKS.labels(queue.name, "running").set(queue.running)
        for priority in Priority:
            waited = queue.oldest_ready_seconds(now, priority) or 0.0
            QUEUE_OLDEST_READY.labels(queue.name, priority).set(waited)
        QUEUE_PAUSED.labels(queue.name).set(int(queue.paused))
    await _read_worker_gauges(services)


async def _read_worker_gauges(services: Services) -> None:
    """Every queue of the settings, and any other a worker names, zero included; a queue
    no worker names any more and the settings lack is dropped."""
    read = await services.store.worker_gauges()
    queues = set(services.queues) | {queue for queue, _ in read.workers}
    WORKERS.clear()
    QUEUE_WORKER_SLOTS.clear()
    for queue in queues:
        for state in ("alive", "draining"):
            WORKERS.labels(queue, state).set(read.workers.get((queue, state), 0))
        QUEUE_WORKER_SLOTS.labels(queue).set(read.slots.get(queue, 0))
