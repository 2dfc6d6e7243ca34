"""Conveyor's benchmark: one command, the local servers, one table.

    python -m bench.run            (wrk must be installed: apt-get install wrk)
    python -m bench.run --only cli (how fast the command lines start: no server needed)

It measures this machine's raw limits first (PostgreSQL committed inserts, RabbitMQ
confirmed publishes and acked consumes) and prints each figure of the service beside the
limit it leans on, so the numbers mean something on any machine. It uses its own database
(conveyor_bench, made anew) and its own queue names, and stops what it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence

from bench import (
    anchor,
    api,
    bulk,
    cli,
    console,
    cost,
    drain,
    limits,
    listing,
    order,
    retention,
    start,
    wait,
    workspace,
)
from bench.context import Bench, Row

# Every section, in the order a run takes them; each one reads and adds to the Bench.
# The machine's limits are not among them: they always run first.
SECTIONS: dict[str, Callable[[Bench], None]] = {
    "api": api.run,
    "anchor": anchor.run,
    "drain": drain.run,
    "start": start.run,
    "cost": cost.run,
    "order": order.run,
    "list": listing.run,
    "console": console.run,
    "wait": wait.run,
    "retention": retention.run,
    "bulk": bulk.run,
    "cli": cli.run,
}
# The sections that load the API with wrk.
WITH_WRK = frozenset({"api", "anchor", "list"})
# The sections that need no server: run alone, they skip the machine's limits.
WITHOUT_SERVERS = frozenset({"cli"})


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parse.add_argument("--drain-tasks", type=int, default=20_000)
    parse.add_argument("--list-rows", type=int, default=10_000_000)
    parse.add_argument(
        "--only",
        nargs="+",
        choices=list(SECTIONS),
        help="run these sections only (the machine's limits run unless no section needs them)",
    )
    return parse


def chosen(only: Iterable[str] | None) -> list[str]:
    """The sections to run, in the run's order: all of them unless `only` names some."""
    wanted = set(only or SECTIONS)
    return [name for name in SECTIONS if name in wanted]


def needs_wrk(sections: Iterable[str]) -> bool:
    return not WITH_WRK.isdisjoint(sections)


def needs_servers(sections: Iterable[str]) -> bool:
    """Whether any of `sections` uses PostgreSQL or RabbitMQ (and so the workspace)."""
    return not WITHOUT_SERVERS.issuperset(sections)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sections = chosen(args.only)
    if needs_wrk(sections) and shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    bench = Bench.from_environment(drain_tasks=args.drain_tasks, list_rows=args.list_rows)
    try:
        run(bench, sections)
    finally:
        if needs_servers(sections):
            asyncio.run(workspace.clean_up(bench))


def run(bench: Bench, sections: Sequence[str]) -> None:
    """The machine's limits (when a section needs the servers), then each of `sections`,
    then the table on stdout."""
    if needs_servers(sections):
        workspace.prepare(bench)
        limits.run(bench)
    for name in sections:
        SECTIONS[name](bench)
    print(table(bench.rows))


def table(rows: Iterable[Row]) -> str:
    """The rows as a Markdown table, after a blank line."""
    lines = ["", "| measure | figure | goal | against this machine's limit |", "|---|---|---|---|"]
    lines += [f"| {what} | {figure} | {goal} | {against} |" for what, figure, goal, against in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
