"""The bench's own statements on its database: tasks loaded straight into the table, the
table emptied and analysed, and waits for a count of tasks in a status."""

from __future__ import annotations

import asyncio
import time

import asyncpg


async def preload(
    dsn: str,
    count: int,
    *,
    kind: str = "noop",
    priorities: tuple[int, ...] = (2,),
    status: str = "NEW",
) -> None:
    """Insert `count` tasks straight into the table, as if submitted (NEW: relayed next),
    a million per statement. Their ids rise with n, so ten million load in minutes."""
    connection = await asyncpg.connect(dsn)
    try:
        for first in range(1, count + 1, 1_000_000):
            last = min(first + 999_999, count)
            await connection.execute(f"""
                INSERT INTO tasks (id, title, priority, status, kind, created_at, updated_at,
                                   available_at, finished_at)
                SELECT CAST(lpad(to_hex(n), 32, '0') AS uuid), 'bench ' || n,
                       (ARRAY{list(priorities)})[1 + n % {len(priorities)}],
                       '{status}', '{kind}', now() - (n || ' ms')::interval, now(), now(),
                       CASE WHEN '{status}' IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN now() END
                FROM generate_series({first}, {last}) AS n
            """)
    finally:
        await connection.close()


async def count_status(dsn: str, status: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        query = "SELECT count(*) FROM tasks WHERE status = $1"
        return int(await connection.fetchval(query, status))
    finally:
        await connection.close()


async def until(dsn: str, status: str, count: int, patience: float) -> float:
    """Seconds until `count` tasks are in `status`; SystemExit after `patience`."""
    started = time.perf_counter()
    while await count_status(dsn, status) < count:
        if time.perf_counter() - started > patience:
            raise SystemExit(f"timed out waiting for {count} {status}")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def truncate(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("TRUNCATE tasks, task_attempts, attempt_logs")
    finally:
        await connection.close()


async def analyze(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("VACUUM ANALYZE tasks")
    finally:
        await connection.close()
