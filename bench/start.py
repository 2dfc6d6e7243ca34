"""Submit to start at a steady 50 tasks a second, and the processes' peak memory."""

from __future__ import annotations

import asyncio
import statistics
import time

import asyncpg
import httpx

from bench import workspace
from bench.context import Bench, peak_rss_mb


def run(bench: Bench) -> None:
    workspace.empty(bench)
    with bench.process("api"), bench.process("worker") as worker:
        bench.wait_ready()
        p50, p99 = asyncio.run(submit_to_start(bench, 50, 10))
        bench.row(
            "submit to start at 50 tasks/s",
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
            goal="p50 ≤ 5 ms, p99 ≤ 20 ms",
            met=p50 <= 5 and p99 <= 20,
        )
        worker_peak = peak_rss_mb(worker)
    api_peak = bench.figures.api_peak_mb  # measured by the api section, when it ran
    api_figure = f"API {api_peak:.0f} MB, " if api_peak else ""
    bench.row(
        "peak memory (RSS), the bulk path included",
        f"{api_figure}worker {worker_peak:.0f} MB",
        goal="API ≤ 100 MB, worker ≤ 80 MB",
        met=api_peak is not None and api_peak <= 100 and worker_peak <= 80,
    )


async def submit_to_start(bench: Bench, rate: float, seconds: float) -> tuple[float, float]:
    """p50 and p99 (ms) from a task's creation to its start, submitted at `rate` a second."""
    async with httpx.AsyncClient(base_url=bench.api, timeout=10, headers=bench.auth) as client:
        ids = []
        started = time.perf_counter()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            response = await client.post("/api/v1/tasks", json={"title": "t", "kind": "noop"})
            ids.append(response.json()["id"])
        await asyncio.sleep(1)
    connection = await asyncpg.connect(bench.dsn)
    try:
        waits = await connection.fetch(
            "SELECT extract(epoch FROM started_at - created_at) * 1000 AS ms FROM tasks "
            "WHERE id = ANY($1::uuid[]) AND started_at IS NOT NULL",
            ids,
        )
    finally:
        await connection.close()
    values = sorted(float(w["ms"]) for w in waits)
    return statistics.median(values), values[int(len(values) * 0.99) - 1]
