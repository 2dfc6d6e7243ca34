"""The recovery sweep: hand back the tasks whose lease ran out, every
RECOVERY_INTERVAL_SECONDS (the operator sweeps by its own policies instead)."""

from __future__ import annotations

from services.core import recovery
from services.core.db.store import SqlTaskStore
from services.core.loops.loop import Loop, Parts


class RecoverySweep(Loop):
    name = "recovery"

    def __init__(self, store: SqlTaskStore, interval: float) -> None:
        self._store = store
        self._interval = interval

    @classmethod
    def of(cls, parts: Parts) -> RecoverySweep:
        return cls(parts.store, parts.settings.recovery_interval_seconds)

    async def step(self) -> float:
        await recovery.recover(self._store)
        return self._interval
