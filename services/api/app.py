"""create_app(settings): the FastAPI application and the lifespan that owns its clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.api.deps import Services
from services.api.errors import BodyLimit, install_error_handlers
from services.api.routes import health, tasks
from services.core.amqp.broker import Broker
from services.core.amqp.topology import Topology
from services.core.db.engine import create_engine
from services.core.db.store import SqlTaskStore
from services.core.kinds import load_kinds
from services.core.relay import Relay
from services.core.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """The API, configured by `settings`; it connects only when it starts."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Services]]:
        engine = create_engine(settings)
        broker = Broker(settings.amqp_url, Topology(settings.amqp_prefix))
        broker.start()
        store = SqlTaskStore(engine)
        relay = Relay(store, broker, batch=settings.relay_batch,
                      interval=settings.relay_interval_seconds)
        relaying = None
        if settings.api_run_relay:
            relaying = asyncio.create_task(relay.run(), name="relay")
        try:
            yield {"services": Services(store, broker, relay, load_kinds(settings.task_modules))}
        finally:
            if relaying is not None:
                relaying.cancel()
                await asyncio.gather(relaying, return_exceptions=True)
            await broker.close()
            await engine.dispose()

    app = FastAPI(
        title="Conveyor",
        version="0.1.0",
        summary="Asynchronous tasks on PostgreSQL and RabbitMQ.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.include_router(tasks.router)
    app.include_router(health.router)
    return app
