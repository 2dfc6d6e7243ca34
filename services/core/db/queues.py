"""The queues' state and backlog: pause and resume, and what each queue holds now."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from services.core.db.base import StoreBase
from services.core.domain import Priority


@dataclass(frozen=True, slots=True)
class QueueState:
    """A queue as it stands: paused or not, and its tasks."""

    name: str
    paused: bool = False
    # Queued (NEW or PENDING) tasks by priority, due or not.
    queued: dict[Priority, int] = field(default_factory=dict)
    running: int = 0
    # When the longest-waiting due task of each priority became ready (none: no entry).
    ready_since: dict[Priority, datetime] = field(default_factory=dict)

    def oldest_ready_seconds(self, now: datetime, priority: Priority | None = None) -> float | None:
        """How long the longest-waiting due task (of `priority`, or of any) has waited at
        `now`; None when none is."""
        since = [at for p, at in self.ready_since.items() if priority in (None, p)]
        return max((now - min(since)).total_seconds(), 0.0) if since else None


class QueueStates(StoreBase):
    """Pause, resume and describe queues; a queue's limits come from the settings."""

    async def set_paused(self, name: str, paused: bool) -> None:
        """Pause or resume `name`: claims of a paused queue take nothing (its tasks stay
        queued, its running tasks finish)."""
        async with self._begin() as connection:
            await connection.execute(_SET_PAUSED, {"name": name, "paused": paused})

    async def queue_states(self, names: Iterable[str]) -> list[QueueState]:
        """Each of `names` as it stands, in that order."""
        names = list(names)
        async with self._begin() as connection:
            paused = {row.name for row in await connection.execute(_PAUSED, {"names": names})}
            counts = list(await connection.execute(_COUNTS, {"names": names}))
        states = []
        for name in names:
            rows = [row for row in counts if row.queue == name]
            states.append(
                QueueState(
                    name,
                    name in paused,
                    {Priority.from_rank(row.priority): row.queued for row in rows if row.queued},
                    sum(row.running for row in rows),
                    {
                        Priority.from_rank(r.priority): r.oldest
                        for r in rows
                        if r.oldest is not None
                    },
                )
            )
        return states


_SET_PAUSED = sa.text("""
    INSERT INTO queues (name, paused) VALUES (:name, :paused)
    ON CONFLICT (name) DO UPDATE SET paused = :paused, changed_at = now()
""")

_PAUSED = sa.text("SELECT name FROM queues WHERE paused AND name = ANY(CAST(:names AS text[]))")

# Live tasks only, read from their partial index.
_COUNTS = sa.text("""
    SELECT queue, priority,
           count(*) FILTER (WHERE status IN ('NEW', 'PENDING')) AS queued,
           count(*) FILTER (WHERE status = 'IN_PROGRESS') AS running,
           min(available_at) FILTER (WHERE status IN ('NEW', 'PENDING') AND available_at <= now())
               AS oldest
    FROM tasks
    WHERE status IN ('NEW', 'PENDING', 'IN_PROGRESS') AND queue = ANY(CAST(:names AS text[]))
    GROUP BY queue, priority
""")
