"""The scheduler: due schedules become tasks, each due time one task, in every process that
runs a relay (any number of them: each schedule is fired by one at a time)."""

from __future__ import annotations

import logging
from datetime import timedelta

from services.core.db.store import SqlTaskStore
from services.core.settings import Settings
from services.core.supervision import Alarm, rest_until
from services.core.telemetry.metrics import SCHEDULE_MISSED, SCHEDULE_TASKS

logger = logging.getLogger(__name__)

# Schedules fired in one transaction, and due times of one schedule in one pass.
BATCH = 100
MOST_RUNS = 100


class Scheduler:
    def __init__(
        self,
        store: SqlTaskStore,
        *,
        grace: float,
        interval: float,
    ) -> None:
        self._store = store
        self._grace = timedelta(seconds=grace)
        self._interval = interval
        self._alarm = Alarm()

    @classmethod
    def from_settings(cls, store: SqlTaskStore, settings: Settings) -> Scheduler:
        return cls(
            store,
            grace=settings.schedule_grace_seconds,
            interval=settings.relay_interval_seconds,
        )

    def kick(self) -> None:
        """Look again now: a schedule was made or resumed, and may be due before the rest ends."""
        self._alarm.kick()

    async def pause(self, seconds: float) -> None:
        """The rest after a pass, which kick() cuts short."""
        await self._alarm.pause(seconds)

    async def step(self) -> float:
        """Fire what is due; answer how long to rest (until the next due time, at most
        the interval, which also bounds how late another process's new schedule is seen)."""
        fired = await self._store.fire_due(self._grace, BATCH, MOST_RUNS)
        # The store announces the tasks made: the relay, told, sends their messages at once.
        SCHEDULE_TASKS.inc(fired.tasks)
        if fired.missed:
            SCHEDULE_MISSED.inc(fired.missed)
            logger.warning("%d due time(s) missed while no scheduler ran", fired.missed)
        if fired.schedules >= BATCH:
            return 0
        return rest_until(await self._store.next_schedule_at(), self._interval)
