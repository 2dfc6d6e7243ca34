"""Workers draining a backlog of no-op tasks, with one worker process and with two."""

from __future__ import annotations

import asyncio
import sys
from contextlib import ExitStack

from bench import database
from bench.context import Bench


def run(bench: Bench) -> None:
    print("workers", file=sys.stderr)
    for workers, goal in ((1, 4000), (2, 5000)):
        rate = drain(bench, workers, bench.drain_tasks)
        bench.row(
            f"drain of noop tasks, {workers} worker process(es)",
            f"{rate:,.0f}/s",
            f"{rate / bench.figures.consumed:.0%} of RabbitMQ acked consumes",
            f"≥ {goal:,}/s",
            rate >= goal,
        )


def drain(bench: Bench, workers: int, count: int) -> float:
    """Tasks a second that `workers` processes complete of `count` already queued."""
    asyncio.run(database.truncate(bench.dsn))
    with bench.process("relay"):
        asyncio.run(database.preload(bench.dsn, count))
        asyncio.run(database.until(bench.dsn, "PENDING", count, 120))
    asyncio.run(database.analyze(bench.dsn))
    with ExitStack() as stack:
        for _ in range(workers):
            stack.enter_context(bench.process("worker", WORKER_CONCURRENCY="64"))
        elapsed = asyncio.run(database.until(bench.dsn, "COMPLETED", count, 600))
    return count / elapsed
