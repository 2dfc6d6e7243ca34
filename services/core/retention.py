"""Retention: finished tasks older than their status's retention are deleted, in batches."""

from __future__ import annotations

import logging

from services.core.db.store import SqlTaskStore
from services.core.domain import Status
from services.core.telemetry.metrics import TASKS_DELETED

logger = logging.getLogger(__name__)


async def delete_expired(
    store: SqlTaskStore, retention: dict[Status, float], batch: int
) -> dict[Status, int]:
    """Delete every finished task past its retention (days by status), `batch` a
    statement, so no lock is held long; answer how many of each status went."""
    deleted: dict[Status, int] = {}
    for status, days in retention.items():
        total = 0
        while True:
            removed = await store.delete_finished(status, days, batch)
            total += removed
            if removed < batch:  # done, or another process has the turn
                break
        if total:
            TASKS_DELETED.labels(status).inc(total)
            deleted[status] = total
    if deleted:
        logger.info("retention deleted %s", {status.value: n for status, n in deleted.items()})
    return deleted
