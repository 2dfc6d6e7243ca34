"""The group-commit batcher: results in order, batches bounded, errors to their callers."""

from __future__ import annotations

import asyncio

from services.core.batching import Batcher


async def test_concurrent_calls_share_batches_and_get_their_own_results() -> None:
    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(write, limit=4)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(10)))
    assert results == [n * 10 for n in range(10)]
    assert [len(b) for b in batches] == [4, 4, 2]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    async def write(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if 3 in items:
            raise RuntimeError("boom")
        return items

    batcher: Batcher[int, int] = Batcher(write, limit=1)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(5)), return_exceptions=True)
    assert [r if not isinstance(r, Exception) else "error" for r in results] == [
        0,
        1,
        2,
        "error",
        4,
    ]


async def test_a_lone_call_goes_through_at_once() -> None:
    async def write(items: list[str]) -> list[str]:
        return [item.upper() for item in items]

    batcher: Batcher[str, str] = Batcher(write, limit=100)
    assert await asyncio.wait_for(batcher.submit("a"), 1) == "A"
    assert await asyncio.wait_for(batcher.submit("b"), 1) == "B"
