"""Retention: delete finished tasks past their status's retention, every
RETENTION_INTERVAL_SECONDS."""

from __future__ import annotations

from services.core import retention
from services.core.db.store import SqlTaskStore
from services.core.loops.loop import Loop, Parts
from services.core.settings import Settings


class RetentionSweep(Loop):
    name = "retention"

    def __init__(self, store: SqlTaskStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings

    @classmethod
    def of(cls, parts: Parts) -> RetentionSweep:
        return cls(parts.store, parts.settings)

    async def step(self) -> float:
        settings = self._settings
        await retention.delete_expired(
            self._store, settings.retention_days(), settings.retention_batch
        )
        return settings.retention_interval_seconds
