"""Recovery: tasks whose holder is gone come back. The sweep, the operator and tests share it.

A worker holds each task under a lease that it renews every heartbeat. When the lease
runs out (the worker was killed, hung, or cut off), `recover` hands the task back in one
guarded statement: to the queue, or to CANCELLED when a cancel was requested, or to
FAILED when its attempts are used up. The attempt number fences the lost holder, so its
late result is refused.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime

from services.core.db.store import SqlTaskStore
from services.core.domain import Recovered
from services.core.telemetry.metrics import RECOVERIES
from services.core.telemetry.tracing import trace_id_of

logger = logging.getLogger(__name__)


async def recover(store: SqlTaskStore, *, batch: int = 500) -> list[Recovered]:
    """Hand back every task whose lease has expired; answer what became of each."""
    recovered: list[Recovered] = []
    while True:
        found = await store.recover_expired(batch)
        recovered.extend(found)
        if len(found) < batch:
            break
    _count(recovered, "lease expired", "lease_expired")
    return recovered


async def recover_worker(
    store: SqlTaskStore, worker_id: str, claimed_before: datetime | None = None
) -> list[Recovered]:
    """Hand back at once every task `worker_id` holds, because that worker is known gone.

    With `claimed_before`, only what it claimed before then (a restarted container).
    """
    recovered = await store.recover_worker(worker_id, claimed_before)
    _count(recovered, f"worker {worker_id} gone", "worker_gone")
    return recovered


def _count(recovered: list[Recovered], why: str, reason: str) -> None:
    for task in recovered:
        RECOVERIES.labels(reason, task.status).inc()
        logger.warning(
            "recovered (%s): now %s after %d attempt(s)",
            why,
            task.status,
            task.attempts,
            extra={"task_id": str(task.id), "trace_id": trace_id_of(task.trace_context)},
        )
    if recovered:
        counts = Counter(task.status.value for task in recovered)
        logger.info("recovery (%s): %s", why, dict(counts))
