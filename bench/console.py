"""The console's pages, each its HTML and the API calls it makes, over a million tasks
all finished just now (the overview's busiest case)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import httpx

from bench import database, workspace
from bench.context import Bench

ROUNDS = 40


def run(bench: Bench, rows: int = 1_000_000) -> None:
    print("console", file=sys.stderr)
    workspace.empty(bench)
    asyncio.run(database.preload(bench.dsn, rows, priorities=(1, 2, 3), status="COMPLETED"))
    asyncio.run(database.analyze(bench.dsn))
    with bench.process("api", API_RUN_RELAY="false", API_RUN_RECOVERY="false"):
        bench.wait_ready()
        newest = httpx.get(f"{bench.api}/api/v1/tasks?limit=1", headers=bench.auth).json()
        times = asyncio.run(page_times(bench, _pages(newest["items"][0]["id"]), ROUNDS))
    worst = 0.0
    figures = []
    for name, values in times.items():
        values.sort()
        p99 = values[int(len(values) * 0.99) - 1]
        worst = max(worst, p99)
        figures.append(f"{name} p50 {statistics.median(values):.0f} / p99 {p99:.0f} ms")
    bench.row(
        f"console pages, {rows:,} tasks (HTML and the page's API calls, {ROUNDS} rounds)",
        "; ".join(figures),
        goal="every page < 200 ms",
        met=worst < 200,
    )


def _pages(newest: str) -> dict[str, list[str]]:
    """Each page's calls, as the console makes them; `newest` is the task page's task."""
    return {
        "overview": ["/ui", "/api/v1/whoami", "/api/v1/overview"],
        "tasks": ["/ui/tasks", "/api/v1/whoami", "/api/v1/tasks?limit=50"],
        "tasks, filtered": ["/api/v1/tasks?status=COMPLETED&priority=HIGH&kind=noop&limit=50"],
        "tasks, title search": ["/api/v1/tasks?title=bench%2099&limit=50"],
        "a task": [
            f"/api/v1/tasks/{newest}",
            f"/api/v1/tasks/{newest}/attempts",
            f"/api/v1/tasks/{newest}/trace",
        ],
        "schedules": ["/api/v1/schedules?limit=100"],
    }


async def page_times(
    bench: Bench, pages: dict[str, list[str]], rounds: int
) -> dict[str, list[float]]:
    """Each console page's API calls, made together as the page makes them, `rounds`
    times: how long each page waited for its last answer (ms)."""
    times: dict[str, list[float]] = {name: [] for name in pages}
    async with httpx.AsyncClient(base_url=bench.api, timeout=30, headers=bench.auth) as client:
        for _ in range(rounds):
            for name, calls in pages.items():
                started = time.perf_counter()
                answers = await asyncio.gather(*(client.get(call) for call in calls))
                times[name].append((time.perf_counter() - started) * 1000)
                for answer in answers:
                    answer.raise_for_status()
    return times
