"""create_app(settings): the FastAPI application and the lifespan that owns its clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api import lean, observability
from services.api.auth import Authenticator
from services.api.deps import Services
from services.api.errors import RequestLimits, install_error_handlers, refuse_other_methods
from services.api.intake import Intake
from services.api.kinds import KindCatalog
from services.api.observability import HttpMetrics
from services.api.openapi import document, operation_id
from services.api.routes import (
    console,
    docs,
    health,
    keys,
    kinds,
    overview,
    queues,
    schedules,
    tasks,
    workers,
)
from services.api.waiting import Waiters
from services.core.db.keys import SeedKey, SqlKeyStore, load_seed
from services.core.db.limits import RateLimits
from services.core.db.schema import plain_dsn, wait_for_schema
from services.core.errors import StoreUnavailable
from services.core.kinds import builtin_kinds
from services.core.loops import Parts, loops_of, run_loops, subscribe
from services.core.relay import Relay
from services.core.runtime import open_clients
from services.core.scheduler import Scheduler
from services.core.settings import Settings
from services.core.supervision import Supervisor
from services.core.telemetry.tracing import tracing_enabled

logger = logging.getLogger(__name__)

API_DESCRIPTION = """Submit tasks, follow them, cancel and re-run them, schedule them.

Every call but the health probes needs an API key, `Authorization: Bearer cvk_<id>_<secret>`,
whose scopes say what it may do (submit, read, cancel, admin; platform for queues and workers).
Every refusal is an RFC 9457 problem document (`application/problem+json`) whose `type`
names the problem (`urn:conveyor:problem:<name>`); 429 and 503 say in `Retry-After` when
to try again. A submit with an `Idempotency-Key` is made once however often it is sent.
"""


def create_app(settings: Settings) -> FastAPI:
    """The API, configured by `settings`; it connects only when it starts."""

    # The API imports no handler: it takes the kinds that workers register.
    builtin = builtin_kinds()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Services]]:
        # Serve at once (503 until the schema is right), so probes and clients get answers.
        # A bad seed file stops the start-up here, naming the entry, rather than later.
        seed = load_seed(Path(settings.auth_seed_file)) if settings.auth_seed_file else []
        async with open_clients(settings, wait=False) as clients:
            relay = Relay.from_settings(clients.store, clients.broker, settings)
            key_store = SqlKeyStore(clients.engine)
            services = Services(
                settings,
                clients.store,
                clients.broker,
                relay,
                Scheduler.from_settings(clients.store, settings),
                Intake(
                    clients.store,
                    clients.broker,
                    relay,
                    settings.relay_batch,
                    publish=settings.api_publish,
                ),
                Waiters(
                    plain_dsn(settings.database_url),
                    settings.wait_max_waiters,
                    clients.store.get,
                ),
                kinds=KindCatalog(clients.store, builtin),
                queues=settings.queue_map(),
                keys=key_store,
                auth=Authenticator(key_store, settings, RateLimits(clients.engine)),
                schema_ready=asyncio.Event(),
                supervisor=Supervisor(),
            )
            parts = _parts(services)
            subscribe(parts)
            background = asyncio.create_task(_background(clients.engine, services, parts, seed))
            background.add_done_callback(_report_crash)
            try:
                yield {"services": services}
            finally:
                await services.intake.close()
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)

    app = FastAPI(
        title="Conveyor",
        version="0.1.0",
        summary="Asynchronous tasks on PostgreSQL and RabbitMQ.",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        docs_url=None,  # served with their files by routes/docs.py
        redoc_url=None,
    )

    def spec() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, sorted(builtin), list(settings.queue_map()))
        return app.openapi_schema

    app.openapi = spec  # type: ignore[method-assign]
    install_error_handlers(app)
    app.add_middleware(
        RequestLimits,
        body_bytes=settings.max_body_bytes,
        header_bytes=settings.max_header_bytes,
        hosts=None if settings.auth_enabled else settings.allowed_hosts,
    )
    app.add_middleware(HttpMetrics)
    app.include_router(tasks.router)
    app.include_router(console.api)
    app.include_router(keys.router)
    app.include_router(schedules.router)
    app.include_router(overview.router)
    app.include_router(queues.router)
    app.include_router(workers.router)
    app.include_router(kinds.router)
    app.include_router(docs.router)
    app.include_router(health.router)
    app.include_router(observability.router)
    app.include_router(console.router)
    refuse_other_methods(app)
    lean.install(app)
    if tracing_enabled():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # SERVER spans for the task routes; probes and scrapes would only be noise.
        FastAPIInstrumentor.instrument_app(app, excluded_urls="/health/,/metrics")
    return app


async def _background(
    engine: AsyncEngine, services: Services, parts: Parts, seed: list[SeedKey]
) -> None:
    """Once the schema is at the expected revision: take requests, and run the API's loops."""
    await wait_for_schema(engine)
    await _seed(services.keys, seed)
    services.schema_ready.set()
    await run_loops(loops_of("api", parts), services.supervisor)


def _parts(services: Services) -> Parts:
    """What the API's loops and the subscribers to its store's status changes use."""
    return Parts(
        services.settings,
        services.store,
        relay=services.relay,
        scheduler=services.scheduler,
        listener=services.waiters,
    )


def _report_crash(background: asyncio.Task[None]) -> None:
    """The API's loops or its seeding stopped for good: say so, loudly."""
    if not background.cancelled() and background.exception() is not None:
        logger.critical("the API's background work stopped", exc_info=background.exception())


async def _seed(keys: SqlKeyStore, seed: list[SeedKey]) -> None:
    """Add the seed file's new keys, waiting out a database outage."""
    while seed:
        try:
            added = await keys.seed(seed)
        except StoreUnavailable as error:
            logger.warning("API keys not seeded yet: %s", error)
            await asyncio.sleep(2)
        else:
            logger.info("API keys seeded: %d of %d were new", added, len(seed))
            return
