"""The API's creates: single ones at 1, 8 and 32 connections, the bulk path, then single
ones at 32 connections with two API processes (`conveyor api --processes 2`)."""

from __future__ import annotations

import sys

from bench.context import Bench, peak_rss_mb
from bench.cpu import POSTGRESQL, RABBITMQ, by_pid, measured
from bench.wrk import SECONDS, ms, wrk


def run(bench: Bench) -> None:
    """Leaves the rate at 32 connections and the API's peak memory in the figures."""
    print("API", file=sys.stderr)
    inserts = bench.figures.inserts
    with bench.process("api") as api:
        bench.wait_ready()
        groups = {"API": by_pid(api.pid), "PostgreSQL": POSTGRESQL, "RabbitMQ": RABBITMQ}
        for connections in (1, 8, 32):
            with measured(groups) as usage:
                rate, p50, p99 = wrk(bench, "/api/v1/tasks", connections, post="post.lua")
            at_32 = connections == 32
            bench.row(
                f"API create, {connections} connection(s)",
                f"{rate:,.0f}/s, p50 {p50}, p99 {p99}; {usage.per_thousand(rate * SECONDS)}",
                f"{rate / inserts:.0%} of PostgreSQL inserts",
                # The rate's goal is against the anchor, in its own section's row.
                "p99 < 50 ms" if at_32 else "",
                ms(p99) < 50,
            )
            bench.figures.single_create = rate
            bench.figures.api_cpu = usage.of("API", rate * SECONDS)
        with measured(groups) as usage:
            rate, p50, p99 = wrk(bench, "/api/v1/tasks:batch", 4, post="batch.lua")
        tasks = rate * 1000 * SECONDS
        bench.row(
            "API bulk submit, 1,000 tasks a request, 4 connections",
            f"{rate * 1000:,.0f} tasks/s, p50 {p50}, p99 {p99} a request; "
            f"{usage.per_thousand(tasks)}",
            f"{rate * 1000 / inserts:.0%} of PostgreSQL inserts",
            "≥ 20,000 tasks/s",
            rate * 1000 >= 20_000,
        )
        bench.figures.api_peak_mb = peak_rss_mb(api)
    with bench.process("api", API_PROCESSES="2") as api:
        bench.wait_ready()
        groups = {"API": by_pid(api.pid), "PostgreSQL": POSTGRESQL, "RabbitMQ": RABBITMQ}
        with measured(groups) as usage:
            rate, p50, p99 = wrk(bench, "/api/v1/tasks", 32, post="post.lua")
        single = bench.figures.single_create or rate
        bench.row(
            "API create, 32 connections, conveyor api --processes 2",
            f"{rate:,.0f}/s, p50 {p50}, p99 {p99}; {usage.per_thousand(rate * SECONDS)}",
            f"{rate / single:.1f} times one process",
        )
