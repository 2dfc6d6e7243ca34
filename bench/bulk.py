"""The bench's bulk section: a backlog of queued tasks, cancelled by one request.

The tasks go straight into the table in one statement, as the API stores them: tenant
"default", time-ordered ids, a thousand sharing each second's created_at (as
POST /api/v1/tasks:batch makes them), NEW and not yet handed to the broker.
"""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg
import httpx

from bench import database, workspace
from bench.context import Bench

_PRELOAD = """
    INSERT INTO tasks (id, tenant, title, priority, status, kind, queue, created_at,
                       updated_at, available_at)
    SELECT CAST(lpad(to_hex(floor(extract(epoch FROM made.at) * 1000)::bigint), 12, '0')
                || '7' || lpad(to_hex(n % 4096), 3, '0') || '8' || lpad(to_hex(n), 15, '0')
                AS uuid),
           'default', 'bulk ' || n, 2, 'NEW', 'noop', 'default', made.at, made.at, made.at
    FROM generate_series(1, $1::integer) AS n,
         LATERAL (SELECT now() - ($1::integer - n) / 1000 * interval '1 second' AS at) AS made
"""


def run(bench: Bench, count: int = 300_000) -> None:
    """One POST /api/v1/tasks:cancel by filter over a backlog of `count` queued tasks."""
    print("bulk actions", file=sys.stderr)
    workspace.empty(bench)
    asyncio.run(preload(bench.dsn, count))
    asyncio.run(database.analyze(bench.dsn))
    with bench.process("api", API_RUN_RELAY="false", API_RUN_RECOVERY="false"):
        bench.wait_ready()
        seconds, cancelled = asyncio.run(cancel(bench.api, bench.auth, {"kind": "noop"}))
    bench.row(
        f"bulk cancel by filter, {count:,} queued tasks, one request",
        f"{seconds:.1f} s ({cancelled / seconds:,.0f} tasks/s), {cancelled:,} cancelled",
        goal="all cancelled in < 60 s (clients give up at 300 s)",
        met=cancelled == count and seconds < 60,
    )


async def preload(dsn: str, count: int) -> None:
    """`count` queued tasks of kind noop, in one statement."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(_PRELOAD, count)
    finally:
        await connection.close()


async def cancel(base: str, headers: dict[str, str], body: dict[str, object]) -> tuple[float, int]:
    """One POST /api/v1/tasks:cancel with `body`: its seconds and the tasks it cancelled."""
    async with httpx.AsyncClient(base_url=base, timeout=900, headers=headers) as client:
        started = time.perf_counter()
        response = await client.post("/api/v1/tasks:cancel", json=body)
        seconds = time.perf_counter() - started
    response.raise_for_status()
    return seconds, int(response.json()["changed"])
