"""Workers draining a backlog of no-op tasks, with one worker process and with two."""

from __future__ import annotations

import asyncio
import sys
from contextlib import ExitStack

from bench import database, workspace
from bench.context import Bench
from bench.cpu import POSTGRESQL, RABBITMQ, Usage, by_pid, measured


def run(bench: Bench) -> None:
    print("workers", file=sys.stderr)
    for workers, goal in ((1, 4000), (2, 5000)):
        rate, usage = drain(bench, workers, bench.drain_tasks)
        bench.row(
            f"drain of noop tasks, {workers} worker process(es)",
            f"{rate:,.0f}/s; {usage.per_thousand(bench.drain_tasks)}",
            f"{rate / bench.figures.consumed:.0%} of RabbitMQ acked consumes",
            f"≥ {goal:,}/s",
            rate >= goal,
        )


def drain(bench: Bench, workers: int, count: int) -> tuple[float, Usage]:
    """Tasks a second that `workers` processes complete of `count` already queued, and the
    CPU the workers, PostgreSQL and RabbitMQ spent on it."""
    workspace.empty(bench)
    with bench.process("relay"):
        asyncio.run(database.preload(bench.dsn, count))
        asyncio.run(database.until(bench.dsn, "PENDING", count, 120))
    asyncio.run(database.analyze(bench.dsn))
    with ExitStack() as stack:
        started = [
            stack.enter_context(bench.process("worker", WORKER_CONCURRENCY="64"))
            for _ in range(workers)
        ]
        groups = {
            "workers": by_pid(*(w.pid for w in started)),
            "PostgreSQL": POSTGRESQL,
            "RabbitMQ": RABBITMQ,
        }
        with measured(groups) as usage:
            elapsed = asyncio.run(database.until(bench.dsn, "COMPLETED", count, 600))
    return count / elapsed, usage
