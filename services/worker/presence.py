"""A worker's row in the worker registry (services/core/db/workers.py): written when it
starts, renewed by its heartbeat, marked draining, deleted when it exits. Its kinds are
registered first (services/core/db/kinds.py): that one write must succeed, since the API
accepts only kinds some worker registered.

The registry tells people and metrics which workers run; no task depends on it. So no
failure of its writes reaches the worker: the heartbeat renews its leases in a statement
of their own first, and a registry write that fails is logged, and made again at the
next beat. A worker that cannot write its row at all reads gone once its lease passes.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from services.core.db.workers import WorkerCard
from services.core.errors import StoreUnavailable
from services.core.kinds import Kind, KindCard
from services.core.settings import Settings
from services.core.version import VERSION

logger = logging.getLogger(__name__)

# How often a worker whose running count and state stay the same writes its row: the
# heartbeat beats far more often (every half second by default) than anyone reads it.
SEEN_EVERY_SECONDS = 5.0
# How often a worker writes back its kinds if they went missing (forgotten while its lease
# had lapsed): an insert that finds them there writes nothing.
KINDS_EVERY_SECONDS = 60.0


class Registry(Protocol):
    """Where a worker registers (the task store)."""

    async def register_kinds(
        self, cards: Sequence[KindCard], version: str, *, renew: bool = True
    ) -> None: ...
    async def register_worker(self, card: WorkerCard, lease_seconds: float) -> None: ...
    async def worker_seen(
        self, card: WorkerCard, running: int, draining: bool, lease_seconds: float
    ) -> None: ...
    async def remove_worker(self, worker_id: str) -> None: ...


class Presence:
    """One worker process's row in the registry."""

    def __init__(
        self,
        registry: Registry,
        card: WorkerCard,
        lease_seconds: float,
        kinds: Iterable[KindCard] = (),
    ) -> None:
        self._registry = registry
        self._card = card
        self._kinds = list(kinds)
        self._lease = lease_seconds
        # Well inside the lease, so a live worker never reads gone between two writes.
        self._every = min(SEEN_EVERY_SECONDS, lease_seconds / 3)
        self._written: tuple[float, int, bool] | None = None  # when, running, draining
        self._kinds_at = time.monotonic()

    @classmethod
    def of(
        cls, registry: Registry, settings: Settings, worker_id: str, kinds: Iterable[Kind]
    ) -> Presence:
        """The presence of the worker `worker_id`, which runs `kinds` on its settings' queues."""
        cards = sorted((found.card() for found in kinds), key=lambda card: card.name)
        card = WorkerCard(
            worker_id,
            socket.gethostname(),
            VERSION,
            tuple(settings.worker_queues),
            tuple(card.name for card in cards),
            settings.worker_concurrency,
            tuple(card.digest for card in cards),
        )
        return cls(registry, card, settings.lease_seconds, cards)

    async def register(self) -> None:
        """The worker starts: its kinds registered (a failure is raised: the worker must
        not take tasks the API would refuse), then its row, fresh."""
        if self._kinds:
            await self._registry.register_kinds(self._kinds, self._card.version)
        await _quietly(self._registry.register_worker(self._card, self._lease))

    async def beat(self, running: int, draining: bool) -> None:
        """The worker is still there, runs `running` tasks, and drains or not: written
        when that changed, or once `_every` seconds."""
        now = time.monotonic()
        if self._written is not None:
            at, was_running, was_draining = self._written
            if (was_running, was_draining) == (running, draining) and now - at < self._every:
                return
        if await _quietly(self._registry.worker_seen(self._card, running, draining, self._lease)):
            self._written = (now, running, draining)
        if self._kinds and now - self._kinds_at >= KINDS_EVERY_SECONDS:
            self._kinds_at = now
            restore = self._registry.register_kinds(self._kinds, self._card.version, renew=False)
            await _quietly(restore)

    async def leave(self) -> None:
        """The worker exits: its row goes."""
        await _quietly(self._registry.remove_worker(self._card.id))


async def _quietly(write: Awaitable[None]) -> bool:
    """Whether `write` was made; a failure is logged, and the next beat writes again."""
    try:
        await write
    except (StoreUnavailable, SQLAlchemyError) as error:
        logger.warning("worker registry not updated: %s", getattr(error, "orig", None) or error)
    except Exception:  # a bug here must not cost the worker a lease: logged, and the next beat
        logger.exception("worker registry not updated")
    else:
        return True
    return False
