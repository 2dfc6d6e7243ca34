"""Workers draining a backlog of no-op tasks, with one worker process and with two, and
the first of a deep backlog with one."""

from __future__ import annotations

import asyncio
import sys
from contextlib import ExitStack

from bench import database, workspace
from bench.context import Bench
from bench.cpu import POSTGRESQL, RABBITMQ, Usage, by_pid, measured

# A deep backlog: the claim's plan and indexes must not slow down with the queue's depth.
BACKLOG = 300_000


def run(bench: Bench) -> None:
    print("workers", file=sys.stderr)
    alone: dict[int, float] = {}
    for workers, goal in ((1, 4000), (2, 5000)):
        rate, usage = drain(bench, workers, bench.drain_tasks)
        alone[workers] = rate
        bench.row(
            f"drain of noop tasks, {workers} worker process(es)",
            f"{rate:,.0f}/s; {usage.per_thousand(bench.drain_tasks)}",
            f"{rate / bench.figures.consumed:.0%} of RabbitMQ acked consumes",
            f"≥ {goal:,}/s",
            rate >= goal,
        )
    rate, usage = drain(bench, 1, bench.drain_tasks, backlog=BACKLOG)
    bench.row(
        f"drain of noop tasks, 1 worker process, the first {bench.drain_tasks:,} of {BACKLOG:,}",
        f"{rate:,.0f}/s; {usage.per_thousand(bench.drain_tasks)}",
        f"{rate / alone[1]:.0%} of the drain of {bench.drain_tasks:,} alone",
        "≥ 4,000/s",
        rate >= 4000,
    )


def drain(bench: Bench, workers: int, count: int, backlog: int = 0) -> tuple[float, Usage]:
    """Tasks a second that `workers` processes complete of `count` already queued (the
    first `count` of `backlog` when given), and the CPU the workers, PostgreSQL and
    RabbitMQ spent on it."""
    workspace.empty(bench)
    queued = max(count, backlog)
    with bench.process("relay"):
        asyncio.run(database.preload(bench.dsn, queued))
        asyncio.run(database.until(bench.dsn, "PENDING", queued, 600))
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
