"""The task list's newest and filtered pages over a large finished history (--list-rows)."""

from __future__ import annotations

import asyncio

from bench import database, workspace
from bench.context import Bench
from bench.wrk import ms, wrk

_PAGES = [
    ("newest page", "/api/v1/tasks?limit=20"),
    ("filtered page", "/api/v1/tasks?status=COMPLETED&priority=HIGH&limit=20"),
]


def run(bench: Bench) -> None:
    rows = bench.list_rows
    workspace.empty(bench)
    asyncio.run(database.preload(bench.dsn, rows, priorities=(1, 2, 3), status="COMPLETED"))
    asyncio.run(database.analyze(bench.dsn))
    with bench.process("api", API_RUN_RELAY="false", API_RUN_RECOVERY="false"):
        bench.wait_ready()
        for label, path in _PAGES:
            rate, p50, p99 = wrk(bench, path, 8)
            bench.row(
                f"list, {label}, {rows:,} tasks, 8 connections",
                f"p50 {p50}, p99 {p99} ({rate:,.0f}/s)",
                goal="p99 ≤ 15 ms at 10,000,000 tasks" if label == "newest page" else "",
                met=ms(p99) <= 15 and rows >= 10_000_000,
            )
