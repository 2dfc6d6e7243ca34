"""One way to run a process's loops: each in a task of its own, all in one TaskGroup, every
pass under the process's Supervisor (which counts, backs off and reports a failing pass)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

from services.core.loops.loop import Loop
from services.core.supervision import Supervisor


class Running:
    """The loops a `running` block started, by name."""

    def __init__(self, tasks: dict[str, asyncio.Task[None]]) -> None:
        self._tasks = tasks

    async def stop(self, name: str) -> None:
        """Stop one loop before the others (a worker's consumer, before its drain)."""
        task = self._tasks.pop(name)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def cancel(self) -> None:
        """Cancel every loop still running."""
        for task in self._tasks.values():
            task.cancel()


@contextlib.asynccontextmanager
async def running(loops: Iterable[Loop], supervisor: Supervisor) -> AsyncIterator[Running]:
    """Start `loops` under `supervisor`; stop those still running once the block ends."""
    async with asyncio.TaskGroup() as group:
        started = Running(
            {loop.name: group.create_task(_run(loop, supervisor), name=loop.name) for loop in loops}
        )
        try:
            yield started
        finally:
            started.cancel()


async def run_loops(loops: Iterable[Loop], supervisor: Supervisor) -> None:
    """Run `loops` under `supervisor` until cancelled."""
    async with running(loops, supervisor):
        await asyncio.get_running_loop().create_future()


async def _run(loop: Loop, supervisor: Supervisor) -> None:
    await supervisor.run(loop.name, loop.step, loop.pause, loop.outages)
