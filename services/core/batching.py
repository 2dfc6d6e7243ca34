"""Group commit: many concurrent callers, one statement.

Under load, each call that arrives while a batch is being written waits for the next
one, so the number of statements (and round trips, and commits) grows with the number of
batches, not of calls; an idle caller still goes through at once, alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Batcher(Generic[In, Out]):
    """Calls `write(items)` for up to `limit` items at a time, one batch in flight.

    `write` answers one result per item, in order; if it raises, every caller of that
    batch gets the error.
    """

    def __init__(self, write: Callable[[list[In]], Awaitable[Sequence[Out]]], limit: int) -> None:
        self._write = write
        self._limit = limit
        self._waiting: list[tuple[In, asyncio.Future[Out]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def submit(self, item: In) -> Out:
        """Add `item` to the next batch and wait for its result."""
        return await self.put(item)

    def put(self, item: In) -> asyncio.Future[Out]:
        """Add `item` to the next batch; its result comes in the future answered."""
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_all())
        return future

    async def flushed(self) -> None:
        """Return once everything put so far has been written (or has failed)."""
        while self._writing is not None and not self._writing.done():
            await asyncio.wait({self._writing})

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self._limit], self._waiting[self._limit :]
            batch = [(item, future) for item, future in batch if not future.done()]
            if not batch:
                continue
            try:
                results = await self._write([item for item, _ in batch])
            except Exception as error:  # noqa: BLE001 - handed to each caller of the batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
