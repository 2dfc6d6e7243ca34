"""One submit, one claim and one result at a time, through the statements the API and the
workers run in batches."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from services.core.auth import DEFAULT_TENANT
from services.core.db.store import SqlTaskStore
from services.core.domain import Claim, NewTask, Status, Submission, Task


async def create(
    store: SqlTaskStore,
    new: NewTask,
    key: str | None = None,
    digest: str | None = None,
    tenant: str = DEFAULT_TENANT,
) -> tuple[Task, bool]:
    """Store `new` as the API does, left for the relay: (task, True), or (earlier task,
    False) for a key the tenant used before with the same digest."""
    (outcome,) = (await store.create_many([Submission(new, tenant, key, digest)])).outcomes
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def claim_one(
    store: SqlTaskStore, worker: str = "w", lease: float = 30.0, aging: float = 3600.0
) -> Claim | None:
    """The task a worker's next ticket would take, if any."""
    claims = await store.claim_many(worker, lease, aging, 1)
    return claims[0] if claims else None


async def queue_and_claim(store: SqlTaskStore, worker: str = "w") -> Claim:
    """Send what is due to the queue and claim the next task, as a relay and a worker
    would; where an API's own relay runs beside the test and reserved a task first, the
    claim waits until that relay has confirmed it (at most 15 s)."""
    await store.confirm_queued(list(await store.reserve_due(10)))
    deadline = asyncio.get_running_loop().time() + 15
    while (claim := await claim_one(store, worker)) is None:
        assert asyncio.get_running_loop().time() < deadline, "no task became claimable"
        await asyncio.sleep(0.02)
    return claim


async def complete_one(store: SqlTaskStore, claim: Claim, result: Any) -> Status | None:
    """Record `result` for `claim`'s attempt; None when that attempt no longer holds it."""
    (status,) = await store.complete_many([(claim.task.id, claim.attempt, json.dumps(result))])
    return status
