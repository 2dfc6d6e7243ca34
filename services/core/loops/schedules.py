"""The scheduler's loop: fire due schedules, rest until the next due time or a kick."""

from __future__ import annotations

from services.core.loops.loop import Loop, Parts, required
from services.core.scheduler import Scheduler


class ScheduleLoop(Loop):
    """A pass fires what is due (see Scheduler.step); the rest ends early on a kick."""

    name = "schedules"

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    @classmethod
    def of(cls, parts: Parts) -> ScheduleLoop:
        return cls(required(parts.scheduler, "scheduler"))

    async def step(self) -> float:
        return await self._scheduler.step()

    async def pause(self, seconds: float) -> None:
        await self._scheduler.pause(seconds)
