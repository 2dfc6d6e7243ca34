"""The processes that run loops and nothing else: `conveyor relay` and `conveyor recover`."""

from __future__ import annotations

from services.core.loops.loop import Parts
from services.core.loops.registry import loops_of
from services.core.loops.running import run_loops
from services.core.loops.wiring import subscribe
from services.core.relay import Relay
from services.core.runtime import open_clients
from services.core.scheduler import Scheduler
from services.core.settings import Settings
from services.core.supervision import Supervisor


async def run_relay(settings: Settings) -> None:
    """The relay and the scheduler as a process of their own, until cancelled."""
    async with open_clients(settings) as clients:
        relay = Relay.from_settings(clients.store, clients.broker, settings)
        scheduler = Scheduler.from_settings(clients.store, settings)
        parts = Parts(settings, clients.store, relay=relay, scheduler=scheduler)
        subscribe(parts)
        await run_loops(loops_of("relay", parts), Supervisor())


async def run_recovery(settings: Settings) -> None:
    """The recovery sweep as a process of its own, until cancelled."""
    async with open_clients(settings) as clients:
        parts = Parts(settings, clients.store)
        subscribe(parts)
        await run_loops(loops_of("recover", parts), Supervisor())
