"""The bench's command line and its sections, without running any of them."""

from __future__ import annotations

import pytest

from bench.context import Bench
from bench.run import SECTIONS, chosen, needs_servers, needs_wrk, parser, table


def test_every_section_the_readme_names_is_known_in_the_order_a_run_takes_them() -> None:
    assert list(SECTIONS) == [
        "api",
        "anchor",
        "drain",
        "start",
        "cost",
        "order",
        "list",
        "console",
        "wait",
        "retention",
        "bulk",
        "cli",
    ]


def test_only_runs_the_sections_it_names_in_the_run_s_order() -> None:
    args = parser().parse_args(["--only", "wait", "console", "--list-rows", "1000000"])
    assert chosen(args.only) == ["console", "wait"]
    assert (args.list_rows, args.drain_tasks) == (1_000_000, 20_000)
    assert chosen(parser().parse_args([]).only) == list(SECTIONS)


def test_an_unknown_section_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        parser().parse_args(["--only", "everything"])
    assert refused.value.code == 2
    assert "invalid choice: 'everything'" in capsys.readouterr().err


def test_wrk_is_needed_only_by_the_sections_that_load_the_api_with_it() -> None:
    assert needs_wrk(chosen(None))
    assert needs_wrk(["list"])
    assert not needs_wrk(["bulk", "wait", "cost", "console"])


def test_only_the_start_of_the_command_lines_runs_without_the_servers() -> None:
    assert not needs_servers(["cli"])
    assert needs_servers(["cli", "wait"])
    assert needs_servers(chosen(None))


def test_a_row_says_whether_its_goal_was_met_and_the_table_keeps_the_order() -> None:
    bench = Bench("postgresql://postgres@db:5432/postgres", "amqp://mq/", "conveyor-bench-x")
    bench.row("drain", "2,000/s", "30% of consumes", "≥ 4,000/s", False)
    bench.row("order", "HIGHx20")
    assert bench.rows == [
        ("drain", "2,000/s", "≥ 4,000/s: not met", "30% of consumes"),
        ("order", "HIGHx20", "", ""),
    ]
    assert table(bench.rows).splitlines()[1:] == [
        "| measure | figure | goal | against this machine's limit |",
        "|---|---|---|---|",
        "| drain | 2,000/s | ≥ 4,000/s: not met | 30% of consumes |",
        "| order | HIGHx20 |  |  |",
    ]


def test_the_processes_of_a_run_use_its_own_database_and_queue_names() -> None:
    bench = Bench("postgresql://postgres@db:5432/postgres", "amqp://mq/", "conveyor-bench-x")
    env = bench.env(WORKER_CONCURRENCY="64")
    assert env["CONVEYOR_DATABASE_URL"] == "postgresql+asyncpg://postgres@db:5432/conveyor_bench"
    assert env["CONVEYOR_AMQP_PREFIX"] == "conveyor-bench-x"
    assert env["CONVEYOR_WORKER_CONCURRENCY"] == "64"
    assert env["CONVEYOR_RATE_LIMIT"] == ""
