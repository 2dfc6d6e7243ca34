"""A steady load with a short retention: the tasks table's rows and size level off."""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg
import httpx

from bench import workspace
from bench.context import Bench


def run(bench: Bench, rate: int = 200, keep_seconds: int = 30, seconds: float = 240) -> None:
    print("retention", file=sys.stderr)
    workspace.empty(bench)
    keep = {
        "RETENTION_COMPLETED_DAYS": str(keep_seconds / 86_400),
        "RETENTION_INTERVAL_SECONDS": "5",
    }
    with bench.process("api", **keep), bench.process("worker"):
        bench.wait_ready()
        samples = asyncio.run(steady_load(bench, rate, seconds, seconds / 8))
    for elapsed, rows, size in samples:
        print(f"    {elapsed:5.0f} s: {rows:,} tasks, {size / 2**20:.1f} MiB", file=sys.stderr)
    third = len(samples) // 3
    middle, last = samples[-third - 1][2], max(size for _, _, size in samples[-third:])
    bench.row(
        f"tasks table under {rate} tasks/s for {seconds:.0f} s, COMPLETED kept {keep_seconds} s",
        ", ".join(f"{rows:,} rows / {size / 2**20:.1f} MiB" for _, rows, size in samples[2::2]),
        f"{rate * seconds:,.0f} tasks submitted in all",
        "size levels off (last third grows < 10%)",
        last <= middle * 1.1,
    )


async def steady_load(
    bench: Bench, rate: int, seconds: float, every: float
) -> list[tuple[float, int, int]]:
    """Submit `rate` tasks a second (batches of a tenth of a second) for `seconds`; every
    `every` seconds, read the tasks table's rows and its size on disk (with its indexes)."""
    samples: list[tuple[float, int, int]] = []
    connection = await asyncpg.connect(bench.dsn)
    body = {"tasks": [{"title": "t", "kind": "noop"} for _ in range(rate // 10)]}
    # Where the server's autovacuum is off (some CI images), vacuum as it would: a table
    # whose deleted rows are never vacuumed grows whatever retention does.
    vacuum = await connection.fetchval("SHOW autovacuum") == "off"
    if vacuum:
        print("    autovacuum is off here: the bench vacuums every 30 s", file=sys.stderr)
    vacuumed = 0.0
    try:
        async with httpx.AsyncClient(base_url=bench.api, timeout=30, headers=bench.auth) as client:
            started = time.perf_counter()
            n = 0
            while (elapsed := time.perf_counter() - started) < seconds:
                (await client.post("/api/v1/tasks:batch", json=body)).raise_for_status()
                if elapsed >= len(samples) * every:
                    rows = await connection.fetchval("SELECT count(*) FROM tasks")
                    size = await connection.fetchval("SELECT pg_total_relation_size('tasks')")
                    samples.append((elapsed, int(rows), int(size)))
                if vacuum and elapsed - vacuumed >= 30:
                    await connection.execute("VACUUM tasks, task_attempts")
                    vacuumed = elapsed
                n += 1
                await asyncio.sleep(max(0.0, started + n / 10 - time.perf_counter()))
    finally:
        await connection.close()
    return samples
