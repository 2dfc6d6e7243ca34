"""The order in which one worker slot starts a backlog of LOW, MEDIUM and HIGH tasks."""

from __future__ import annotations

import asyncio

import asyncpg

from bench import database, workspace
from bench.context import Bench

_NAMES = {1: "LOW", 2: "MEDIUM", 3: "HIGH"}


def run(bench: Bench) -> None:
    workspace.empty(bench)
    with bench.process("relay"):
        asyncio.run(database.preload(bench.dsn, 60, priorities=(1, 2, 3)))
        asyncio.run(database.until(bench.dsn, "PENDING", 60, 60))
    with bench.process("worker", WORKER_CONCURRENCY="1"):
        asyncio.run(database.until(bench.dsn, "COMPLETED", 60, 120))
    bench.row("start order, 60 queued LOW/MEDIUM/HIGH, 1 slot", asyncio.run(start_order(bench.dsn)))


async def start_order(dsn: str) -> str:
    """The priorities in the order the tasks started, as runs: "HIGHx20 > MEDIUMx20 > ..."."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT priority FROM tasks ORDER BY started_at")
    finally:
        await connection.close()
    runs: list[list[int]] = []
    for r in rows:
        if runs and runs[-1][0] == r["priority"]:
            runs[-1][1] += 1
        else:
            runs.append([r["priority"], 1])
    return " > ".join(f"{_NAMES[p]}x{n}" for p, n in runs)
