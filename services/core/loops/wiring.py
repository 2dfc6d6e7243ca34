"""Who hears a store's status changes: the same subscribers in every process, wired here."""

from __future__ import annotations

from services.core.loops.loop import Parts
from services.core.telemetry.metrics import count_moves


def subscribe(parts: Parts) -> None:
    """Every process counts its store's status changes; one with a relay also wakes it
    for the tasks owed a message. Once per store."""
    parts.store.events.subscribe(count_moves)
    if parts.relay is not None:
        parts.store.events.subscribe(parts.relay.moved)
