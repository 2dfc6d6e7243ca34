"""Kinds registered by workers (schema 0013): each version a worker runs, and which of
them the API accepts now.

A worker registers its kinds' cards when it starts, before it takes any task, and lists
their digests in its row of the worker registry. A version is current while a live
worker runs it; a kind that no live worker runs (its pool scaled to zero, say) keeps the
version registered last, so its tasks are still accepted and wait for a worker.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from services.core.db.base import StoreBase
from services.core.kinds import KindCard

# A version no worker runs any more, and that is not its kind's last, is deleted this long
# after it was registered (by the next registration of its kind).
STALE_VERSION_SECONDS = 86400.0


@dataclass(frozen=True, slots=True)
class KindVersion:
    """A current version of a kind, as the API reads the registry."""

    card: KindCard
    # The worker version that registered it, and when (None: a built-in kind that no
    # worker has registered yet).
    version: str
    registered_at: datetime | None
    # Live workers running it now.
    workers: int


class KindRegistry(StoreBase):
    """Register the kinds a worker runs; read the current versions; forget a kind."""

    async def register_kinds(
        self, cards: Sequence[KindCard], version: str, *, renew: bool = True
    ) -> None:
        """Write each of `cards` as registered now by a worker of `version`; with
        `renew=False`, only those that are missing."""
        params = {
            "digests": [card.digest for card in cards],
            "names": [card.name for card in cards],
            "queues": [card.queue for card in cards],
            "timeouts": [card.timeout_seconds for card in cards],
            "descriptions": [card.description for card in cards],
            "schemas": [
                None if card.payload_schema is None else json.dumps(card.payload_schema)
                for card in cards
            ],
            "version": version,
            "stale": STALE_VERSION_SECONDS,
        }
        async with self._begin() as connection:
            await connection.execute(_REGISTER if renew else _RESTORE, params)

    async def current_kinds(self) -> list[KindVersion]:
        """Every current version of every registered kind, by name then newest first."""
        async with self._begin() as connection:
            rows = await connection.execute(_CURRENT)
            return [
                KindVersion(
                    KindCard(
                        row.name,
                        row.queue,
                        row.timeout_seconds,
                        row.description,
                        row.payload_schema,
                        row.digest,
                    ),
                    row.version,
                    row.registered_at,
                    row.workers,
                )
                for row in rows
            ]

    async def forget_kind(self, name: str) -> int:
        """Delete every version of the kind `name` unless a live worker runs one of them
        (checked in the statement itself); how many were deleted. A worker that runs it
        later registers it again."""
        async with self._begin() as connection:
            result = await connection.execute(_FORGET, {"name": name})
            return result.rowcount


# Registering the same version again renews when it was registered: the version a
# restarted worker runs is its kind's last. `renew` only writes a version that is missing
# (a worker's, forgotten while its lease had lapsed): a running worker's beat never moves
# which version is the last.
_REGISTER = sa.text("""
    WITH cards AS (
        SELECT * FROM unnest(
            CAST(:digests AS text[]), CAST(:names AS text[]), CAST(:queues AS text[]),
            CAST(:timeouts AS double precision[]), CAST(:descriptions AS text[]),
            CAST(:schemas AS jsonb[])
        ) AS c(digest, name, queue, timeout_seconds, description, payload_schema)
    ), stale AS (
        DELETE FROM kinds WHERE name IN (SELECT name FROM cards)
            AND digest NOT IN (SELECT digest FROM cards)
            AND registered_at < now() - make_interval(secs => :stale)
            AND NOT EXISTS (SELECT FROM workers
                            WHERE expires_at > now() AND kinds.digest = ANY(kind_digests))
    )
    INSERT INTO kinds (digest, name, queue, timeout_seconds, description, payload_schema,
                       version)
    SELECT digest, name, queue, timeout_seconds, description, payload_schema, :version
    FROM cards
    ON CONFLICT (digest) DO UPDATE SET version = EXCLUDED.version, registered_at = now()
""")

_RESTORE = sa.text("""
    INSERT INTO kinds (digest, name, queue, timeout_seconds, description, payload_schema,
                       version)
    SELECT digest, name, queue, timeout_seconds, description, payload_schema, :version
    FROM unnest(
        CAST(:digests AS text[]), CAST(:names AS text[]), CAST(:queues AS text[]),
        CAST(:timeouts AS double precision[]), CAST(:descriptions AS text[]),
        CAST(:schemas AS jsonb[])
    ) AS c(digest, name, queue, timeout_seconds, description, payload_schema)
    ON CONFLICT (digest) DO NOTHING
""")

_CURRENT = sa.text("""
    SELECT k.digest, k.name, k.queue, k.timeout_seconds, k.description, k.payload_schema,
           k.version, k.registered_at, coalesce(w.workers, 0) AS workers
    FROM kinds k
    LEFT JOIN (
        SELECT digest, count(*) AS workers
        FROM workers, unnest(kind_digests) AS digest
        WHERE expires_at > now()
        GROUP BY digest
    ) w USING (digest)
    WHERE w.workers > 0 OR k.registered_at = (
        SELECT max(registered_at) FROM kinds newest WHERE newest.name = k.name)
    ORDER BY k.name COLLATE "C", k.registered_at DESC
""")

_FORGET = sa.text("""
    DELETE FROM kinds WHERE name = :name AND NOT EXISTS (
        SELECT FROM workers, kinds AS held
        WHERE held.name = :name AND workers.expires_at > now()
          AND held.digest = ANY(workers.kind_digests))
""")
