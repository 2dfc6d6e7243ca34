"""What a loop is, and what a process hands its loops."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

from services.core.db.store import SqlTaskStore
from services.core.relay import Relay
from services.core.scheduler import Scheduler
from services.core.settings import Settings
from services.core.supervision import OUTAGES

T = TypeVar("T")


class Loop:
    """One background loop: its name, its pass, and its rest between passes."""

    # The `loop` label of conveyor_background_errors_total and conveyor_loop_failing.
    name: ClassVar[str]
    # What a pass may raise that is an outage to wait out, not a bug.
    outages: ClassVar[tuple[type[BaseException], ...]] = OUTAGES

    async def step(self) -> float:
        """One pass; answers how long to rest before the next."""
        raise NotImplementedError

    async def pause(self, seconds: float) -> None:
        """The rest between passes; a loop that something can wake cuts it short then."""
        await asyncio.sleep(seconds)


class Listener(Protocol):
    """The API's listener for finished tasks (its waiters)."""

    async def listen_once(self) -> float: ...


class Holder(Protocol):
    """A worker: it holds leases and consumes claim tickets."""

    async def heartbeat(self) -> None: ...

    async def consume_once(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Parts:
    """What a process hands its loops: settings and store always, the rest if it has them."""

    settings: Settings
    store: SqlTaskStore
    relay: Relay | None = None
    scheduler: Scheduler | None = None
    listener: Listener | None = None
    worker: Holder | None = None


def required(part: T | None, what: str) -> T:
    """`part`, which a loop cannot run without: a process that runs the loop has it."""
    if part is None:
        raise LookupError(f"a loop needs the {what}, and this process did not hand it over")
    return part
