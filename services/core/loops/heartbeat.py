"""A worker's heartbeat: renew the leases of every held task, then keep the worker's row
in the worker registry, every HEARTBEAT_SECONDS."""

from __future__ import annotations

from services.core.loops.loop import Holder, Loop, Parts, required


class Heartbeat(Loop):
    name = "heartbeat"

    def __init__(self, worker: Holder, every: float) -> None:
        self._worker = worker
        self._every = every

    @classmethod
    def of(cls, parts: Parts) -> Heartbeat:
        return cls(required(parts.worker, "worker"), parts.settings.heartbeat_seconds)

    async def step(self) -> float:
        await self._worker.heartbeat()
        return self._every
