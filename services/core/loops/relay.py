"""The outbox relay's loop: publish due tasks' messages, rest until kicked or one falls due."""

from __future__ import annotations

from services.core.loops.loop import Loop, Parts, required
from services.core.relay import Relay


class RelayLoop(Loop):
    """A pass publishes a batch (see Relay.step); the rest ends early on Relay.kick()."""

    name = "relay"

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    @classmethod
    def of(cls, parts: Parts) -> RelayLoop:
        return cls(required(parts.relay, "relay"))

    async def step(self) -> float:
        return await self._relay.step()

    async def pause(self, seconds: float) -> None:
        await self._relay.pause(seconds)
