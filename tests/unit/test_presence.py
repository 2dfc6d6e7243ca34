"""A worker's registry row is written when what it says changes, else once in a while."""

from __future__ import annotations

from typing import Any, cast

from services.core.db.workers import WorkerCard, WorkerRegistry
from services.core.errors import StoreUnavailable
from services.core.kinds import KindCard
from services.worker import presence
from services.worker.presence import Presence

CARD = WorkerCard("w-1", "host", "0.1.0", ("default",), ("noop",), 4)


class FakeRegistry:
    def __init__(self) -> None:
        self.seen: list[tuple[int, bool]] = []
        self.restored: list[list[str]] = []
        self.failing = False

    async def register_kinds(
        self, cards: list[KindCard], version: str, *, renew: bool = True
    ) -> None:
        assert not renew  # a beat only writes back what is missing
        self.restored.append([card.name for card in cards])

    async def worker_seen(
        self, card: WorkerCard, running: int, draining: bool, lease: float
    ) -> None:
        if self.failing:
            raise StoreUnavailable("down")
        self.seen.append((running, draining))


def presence_on(registry: FakeRegistry, lease: float = 30) -> Presence:
    return Presence(cast(WorkerRegistry, registry), CARD, lease)


async def test_beats_that_say_the_same_write_once_until_the_interval_passes(
    monkeypatch: Any,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(presence.time, "monotonic", lambda: clock[0])
    registry = FakeRegistry()
    beating = presence_on(registry)
    for _ in range(5):
        await beating.beat(1, False)
    assert registry.seen == [(1, False)]
    clock[0] += presence.SEEN_EVERY_SECONDS
    await beating.beat(1, False)
    assert registry.seen == [(1, False), (1, False)]


async def test_a_change_of_running_or_draining_is_written_at_once() -> None:
    registry = FakeRegistry()
    beating = presence_on(registry)
    for running, draining in [(1, False), (2, False), (2, True)]:
        await beating.beat(running, draining)
    assert registry.seen == [(1, False), (2, False), (2, True)]


async def test_a_failed_write_is_made_again_at_the_next_beat() -> None:
    registry = FakeRegistry()
    beating = presence_on(registry)
    registry.failing = True
    await beating.beat(1, False)
    registry.failing = False
    await beating.beat(1, False)
    assert registry.seen == [(1, False)]


async def test_a_short_lease_writes_well_inside_it(monkeypatch: Any) -> None:
    clock = [0.0]
    monkeypatch.setattr(presence.time, "monotonic", lambda: clock[0])
    registry = FakeRegistry()
    beating = presence_on(registry, lease=1.5)
    await beating.beat(0, False)
    clock[0] += 0.5
    await beating.beat(0, False)
    assert len(registry.seen) == 2


async def test_a_beat_writes_back_missing_kinds_once_a_minute(monkeypatch: Any) -> None:
    clock = [100.0]
    monkeypatch.setattr(presence.time, "monotonic", lambda: clock[0])
    registry = FakeRegistry()
    card = KindCard.of("resize", "default", None, "", None)
    beating = Presence(cast(WorkerRegistry, registry), CARD, 30, [card])
    await beating.beat(0, False)
    clock[0] += presence.KINDS_EVERY_SECONDS
    await beating.beat(0, False)
    await beating.beat(0, False)
    assert registry.restored == [["resize"]]
