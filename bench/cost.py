"""PostgreSQL's work for one task's whole path: submit, relay, claim, complete."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx

from bench import database, workspace
from bench.context import Bench

# PostgreSQL's WAL per completed task when the bench first measured it; the goal halves it.
FIRST_WAL_PER_TASK = 4949


def run(bench: Bench) -> None:
    figure, wal = cost_per_task(bench, 2000)
    bench.row(
        "PostgreSQL cost per completed task (submit, relay, claim, complete)",
        figure,
        goal=f"WAL ≤ {FIRST_WAL_PER_TASK // 2:,} bytes (half the first {FIRST_WAL_PER_TASK:,})",
        met=wal <= FIRST_WAL_PER_TASK / 2,
    )


def cost_per_task(bench: Bench, count: int) -> tuple[str, float]:
    """The figure for `count` tasks submitted one by one and completed, and the WAL bytes."""
    workspace.empty(bench)
    with bench.process("api"), bench.process("worker"):
        bench.wait_ready()
        before = asyncio.run(database_counters(bench.dsn))
        asyncio.run(submit_many(bench, count))
        asyncio.run(database.until(bench.dsn, "COMPLETED", count, 300))
        time.sleep(1.5)  # PostgreSQL publishes a backend's counters within a second
        after = asyncio.run(database_counters(bench.dsn))
    per = {key: (after[key] - before[key]) / count for key in after}
    figure = (
        f"{per['wal']:,.0f} WAL bytes, {per['xact_commit']:.2f} commits, "
        f"{per['writes']:.2f} row writes"
    )
    if "statements" in per:
        figure += f", {per['statements']:.1f} statements"
    return figure, per["wal"]


async def database_counters(dsn: str) -> dict[str, float]:
    """WAL written so far (whole server), and this database's commits, row writes and,
    where pg_stat_statements is loaded, statements."""
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS wal, xact_commit,"
            " tup_inserted + tup_updated + tup_deleted AS writes"
            " FROM pg_stat_database WHERE datname = current_database()"
        )
        counters = {key: float(value) for key, value in row.items()}
        try:
            counters["statements"] = float(
                await connection.fetchval(
                    "SELECT sum(calls) FROM pg_stat_statements"
                    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
                or 0
            )
        except asyncpg.PostgresError:  # the extension is not loaded on this server
            pass
        return counters
    finally:
        await connection.close()


async def submit_many(bench: Bench, count: int, concurrency: int = 16) -> None:
    """`count` single submits through the API, `concurrency` at a time."""
    numbers = iter(range(count))
    async with httpx.AsyncClient(base_url=bench.api, timeout=30, headers=bench.auth) as client:

        async def sender() -> None:
            for _ in numbers:
                response = await client.post("/api/v1/tasks", json={"title": "t", "kind": "noop"})
                response.raise_for_status()

        await asyncio.gather(*(sender() for _ in range(concurrency)))
