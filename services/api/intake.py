"""Submissions on their way in: stored by group commit, then handed to the broker at once.

Concurrent single submits share one INSERT and one commit (a request that arrives while
one is being written joins the next), so PostgreSQL's cost per task falls as the load
rises. Tasks that are due now are reserved as they are stored and published right after
the commit by this process (the relay's Handover); the relay remains the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from services.core.amqp.broker import Broker
from services.core.batching import Batcher
from services.core.db.store import SqlTaskStore
from services.core.domain import Submission, Task
from services.core.errors import IdempotencyConflict, StoreUnavailable
from services.core.relay import Handover, Relay
from services.core.telemetry.metrics import TASKS_SUBMITTED, kind_label

logger = logging.getLogger(__name__)

Outcome = tuple[Task, bool] | IdempotencyConflict

# The most single submits that share one statement.
GROUP_LIMIT = 256
# How long a stopping API process goes on sending the messages of tasks it stored.
FLUSH_SECONDS = 5.0


class Intake:
    def __init__(
        self, store: SqlTaskStore, broker: Broker, relay: Relay, batch: int, publish: bool = True
    ) -> None:
        self._store = store
        self._broker = broker
        self._publish = publish
        self._handover = Handover(relay, batch)
        self._singles: Batcher[Submission, Outcome | Exception] = Batcher(self._group, GROUP_LIMIT)

    async def submit(self, submission: Submission) -> tuple[Task, bool]:
        """Store one task, in the next group commit: (task, True), or (earlier task, False)
        for a repeated idempotency key; raises IdempotencyConflict for a key used for
        another request."""
        outcome = await self._singles.submit(submission)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def close(self) -> None:
        """Send the messages still waiting, for at most FLUSH_SECONDS, before the broker
        connection closes; what is left then is the relay's after LOST_MESSAGE_SECONDS."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_SECONDS):
                await self._handover.flush()

    async def submit_many(self, submissions: Sequence[Submission]) -> list[Outcome]:
        """Store a batch in one statement of its own, all or none; each one's outcome."""
        return await self._store_all(submissions)

    async def _group(self, submissions: list[Submission]) -> list[Outcome | Exception]:
        try:
            return list(await self._store_all(submissions))
        except StoreUnavailable:
            raise
        except Exception:
            if len(submissions) == 1:
                raise
            # One request's task that PostgreSQL refuses must not fail the others that
            # shared its statement: each is stored again alone, and only that one fails.
            logger.warning(
                "a group commit failed; storing its %d tasks one by one", len(submissions)
            )
            return [await self._alone(submission) for submission in submissions]

    async def _alone(self, submission: Submission) -> Outcome | Exception:
        try:
            return (await self._store_all([submission]))[0]
        except StoreUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - answered to its own request only
            return error

    async def _store_all(self, submissions: Sequence[Submission]) -> list[Outcome]:
        reserve = self._publish and self._broker.ready and self._handover.has_room
        # The store announces the new tasks; the relay, told, sends those not reserved here
        # (for later, or the broker is away or behind).
        stored = await self._store.create_many(submissions, reserve=reserve)
        for outcome in stored.outcomes:
            if isinstance(outcome, tuple) and outcome[1]:
                task = outcome[0]
                TASKS_SUBMITTED.labels(task.priority, kind_label(task.kind)).inc()
        if stored.reserved:
            self._handover.send_soon(stored.reserved)
        return stored.outcomes
