"""Small dependencies, so routes read like sentences."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from services.api.intake import Intake
from services.api.kinds import KindCatalog
from services.api.waiting import Waiters
from services.core.amqp.broker import Broker
from services.core.db.keys import SqlKeyStore
from services.core.db.store import SqlTaskStore
from services.core.domain import Queue
from services.core.errors import StoreUnavailable
from services.core.relay import Relay
from services.core.scheduler import Scheduler
from services.core.settings import Settings
from services.core.supervision import Supervisor

if TYPE_CHECKING:
    from services.api.auth import Authenticator


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds once and every request shares."""

    settings: Settings
    store: SqlTaskStore
    broker: Broker
    relay: Relay
    scheduler: Scheduler
    intake: Intake
    waiters: Waiters
    kinds: KindCatalog
    queues: dict[str, Queue]
    keys: SqlKeyStore
    auth: Authenticator
    # Set once the database is at the schema revision this code expects.
    schema_ready: asyncio.Event
    # The relay and the recovery sweep, when this process runs them.
    supervisor: Supervisor


async def services_of(request: Request) -> Services:
    """The request's Services; 503 until the schema is at the expected revision."""
    services: Services = request.state.services
    if not services.schema_ready.is_set():
        raise StoreUnavailable("the database schema is not at the expected revision yet")
    return services


async def _store(services: Annotated[Services, Depends(services_of)]) -> SqlTaskStore:
    return services.store


ServicesDep = Annotated[Services, Depends(services_of)]
StoreDep = Annotated[SqlTaskStore, Depends(_store)]
