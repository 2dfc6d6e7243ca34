"""The worker registry: which worker processes run, on which queues, how busy, and
whether they are still there.

A worker writes its row when it starts, renews it with every heartbeat (in a statement
of its own, apart from its lease renewal), and deletes it when it exits. A worker that
died leaves its row behind: it reads gone once the worker's lease has passed since it
was last seen, and any other worker's heartbeat deletes it GONE_KEPT_SECONDS later.
Nothing about a task depends on this table: it is for people, the API and the metrics.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from services.core.db.base import StoreBase

# How long a gone worker's row is still shown before it is deleted.
GONE_KEPT_SECONDS = 3600.0


class WorkerState(enum.StrEnum):
    """alive: taking work; draining: finishing what it holds before it exits; gone: not
    seen within its lease (it died, or lost PostgreSQL)."""

    ALIVE = "alive"
    DRAINING = "draining"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class WorkerCard:
    """What a worker process says of itself when it registers."""

    # Its holder id on the tasks it claims: the pod's name in Kubernetes.
    id: str
    host: str
    version: str
    queues: Sequence[str]
    kinds: Sequence[str]
    # Tasks it may run at once: its slots.
    concurrency: int
    # The versions of its kinds it registered (services/core/db/kinds.py).
    kind_digests: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class WorkerSeen:
    """A worker as the registry last saw it."""

    id: str
    host: str
    version: str
    queues: list[str]
    kinds: list[str]
    concurrency: int
    # Tasks it ran at its last heartbeat.
    running: int
    state: WorkerState
    started_at: datetime
    last_seen_at: datetime


class WorkerRegistry(StoreBase):
    """Register, renew and remove a worker's row; list the workers."""

    async def register_worker(self, card: WorkerCard, lease_seconds: float) -> None:
        """Write `card` as a worker that starts now, over any row of the same id (a
        restarted container of the same pod)."""
        async with self._begin() as connection:
            await connection.execute(_REGISTER, _params(card, lease_seconds))

    async def worker_seen(
        self, card: WorkerCard, running: int, draining: bool, lease_seconds: float
    ) -> None:
        """A heartbeat of the worker of `card`: it runs `running` tasks, drains or not, and
        is seen for another `lease_seconds`. Its row is written again if it was deleted
        (a worker cut off from PostgreSQL for long); gone rows past GONE_KEPT_SECONDS
        are deleted on the way."""
        params = {
            **_params(card, lease_seconds),
            "running": running,
            "draining": draining,
            "kept": GONE_KEPT_SECONDS,
        }
        async with self._begin() as connection:
            await connection.execute(_SEEN, params)

    async def remove_worker(self, worker_id: str) -> None:
        """Delete the row of a worker that exits."""
        async with self._begin() as connection:
            await connection.execute(_REMOVE, {"id": worker_id})

    async def workers(self, queue: str | None = None) -> list[WorkerSeen]:
        """Every registered worker (alive, draining or gone) by id; with `queue`, those
        that consume it."""
        async with self._begin() as connection:
            rows = await connection.execute(_LIST, {"queue": queue})
            return [
                WorkerSeen(
                    row.id,
                    row.host,
                    row.version,
                    list(row.queues),
                    list(row.kinds),
                    row.concurrency,
                    row.running,
                    WorkerState(row.state),
                    row.started_at,
                    row.last_seen_at,
                )
                for row in rows
            ]


def _params(card: WorkerCard, lease_seconds: float) -> dict[str, Any]:
    return {
        "id": card.id,
        "host": card.host,
        "version": card.version,
        "queues": list(card.queues),
        "kinds": list(card.kinds),
        "kind_digests": list(card.kind_digests),
        "concurrency": card.concurrency,
        "lease": lease_seconds,
    }


_REGISTER = sa.text("""
    INSERT INTO workers
        (id, host, version, queues, kinds, kind_digests, concurrency, expires_at)
    VALUES (:id, :host, :version, CAST(:queues AS text[]), CAST(:kinds AS text[]),
            CAST(:kind_digests AS text[]), :concurrency, now() + make_interval(secs => :lease))
    ON CONFLICT (id) DO UPDATE SET
        host = EXCLUDED.host, version = EXCLUDED.version, queues = EXCLUDED.queues,
        kinds = EXCLUDED.kinds, kind_digests = EXCLUDED.kind_digests,
        concurrency = EXCLUDED.concurrency, running = 0,
        draining = false, started_at = now(), last_seen_at = now(),
        expires_at = EXCLUDED.expires_at
""")

# Gone rows are deleted with SKIP LOCKED: heartbeats of many workers never wait on each
# other for them.
_SEEN = sa.text("""
    WITH forgotten AS (
        DELETE FROM workers WHERE id = ANY(ARRAY(
            SELECT id FROM workers
            WHERE expires_at < now() - make_interval(secs => :kept) AND id <> :id
            FOR UPDATE SKIP LOCKED))
    )
    INSERT INTO workers (id, host, version, queues, kinds, kind_digests, concurrency, running,
                         draining, expires_at)
    VALUES (:id, :host, :version, CAST(:queues AS text[]), CAST(:kinds AS text[]),
            CAST(:kind_digests AS text[]), :concurrency, :running, :draining,
            now() + make_interval(secs => :lease))
    ON CONFLICT (id) DO UPDATE SET
        running = EXCLUDED.running, draining = EXCLUDED.draining, last_seen_at = now(),
        expires_at = EXCLUDED.expires_at
""")

_REMOVE = sa.text("DELETE FROM workers WHERE id = :id")

# By id in byte order, the same in every database whatever its collation.
_LIST = sa.text("""
    SELECT id, host, version, queues, kinds, concurrency, running, started_at, last_seen_at,
           CASE WHEN expires_at < now() THEN 'gone'
                WHEN draining THEN 'draining'
                ELSE 'alive' END AS state
    FROM workers
    WHERE CAST(:queue AS text) IS NULL OR :queue = ANY(queues)
    ORDER BY id COLLATE "C"
""")
