"""What every process opens first: the store, the broker, and a schema it can trust."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from services.core.amqp.broker import Broker
from services.core.amqp.topology import Topology
from services.core.db.engine import create_engine
from services.core.db.schema import wait_for_schema
from services.core.db.store import SqlTaskStore
from services.core.settings import Settings
from services.core.telemetry.tracing import describe_peers

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Clients:
    engine: AsyncEngine
    store: SqlTaskStore
    broker: Broker


@contextlib.asynccontextmanager
async def open_clients(
    settings: Settings, *, wait: bool = True, generic_plans: bool = False
) -> AsyncIterator[Clients]:
    """Open the store and start the broker connection; close both on exit.

    With `wait`, return only once the schema is at the revision this code expects, so no
    process takes work against a database that a migration has not reached yet.
    `generic_plans`: see create_engine().
    """
    describe_peers(settings.database_url, settings.amqp_url)
    engine = create_engine(settings, generic_plans=generic_plans)
    broker = Broker(settings.amqp_url, Topology(settings.amqp_prefix, tuple(settings.queue_map())))
    try:
        if wait:
            await wait_for_schema(engine)
        broker.start()
        yield Clients(engine, SqlTaskStore(engine, settings.tenant_max_running), broker)
    finally:
        await broker.close()
        await engine.dispose()


def tune_gc() -> None:
    """Collect less often in long-running servers, and never walk the startup objects.

    Each request allocates many short-lived objects; the default thresholds run a young
    collection every 700 allocations, which costs throughput and adds latency spikes.
    Reference counting still frees almost everything at once; cycles are collected later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a server process's `main` on uvloop, as uvicorn runs the API: its sockets, TLS
    and callbacks cost less than on asyncio's own loop (a drained task about an eighth
    less of the worker's CPU). The operator stays on asyncio's loop, as kopf runs it."""
    return uvloop.run(main)
