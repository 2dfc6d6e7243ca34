"""The API's listener for finished tasks: one connection that wakes its waiting requests,
opened again when it is lost."""

from __future__ import annotations

from services.core.loops.loop import Listener, Loop, Parts, required


class Listen(Loop):
    name = "listen"

    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    @classmethod
    def of(cls, parts: Parts) -> Listen:
        return cls(required(parts.listener, "listener for finished tasks"))

    async def step(self) -> float:
        return await self._listener.listen_once()
