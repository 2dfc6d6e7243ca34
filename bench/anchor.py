"""The anchor: FastAPI + SQLAlchemy + Celery (bench/baseline.py) under the load of the
API's single creates at 32 connections, on the same servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from bench.context import Bench
from bench.cpu import POSTGRESQL, RABBITMQ, by_pid, measured
from bench.wrk import SECONDS, wrk

PORT = 8788
# The baseline's API and its Celery worker.
_COMMANDS = [
    [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baseline:app",
        "--port",
        str(PORT),
        "--log-level",
        "warning",
        "--no-access-log",
    ],
    [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.baseline:celery",
        "worker",
        "-P",
        "prefork",
        "-c",
        "2",
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ],
]


def run(bench: Bench) -> None:
    print("the anchor: FastAPI + SQLAlchemy + Celery", file=sys.stderr)
    with baseline(bench) as (api, worker):
        groups = {
            "API": by_pid(api.pid),
            "Celery": by_pid(worker.pid),
            "PostgreSQL": POSTGRESQL,
            "RabbitMQ": RABBITMQ,
        }
        with measured(groups) as usage:
            base = f"http://127.0.0.1:{PORT}"
            rate, p50, p99 = wrk(bench, "/tasks", 32, post="post.lua", base=base)
    single, cpu = bench.figures.single_create, usage.of("API", rate * SECONDS)
    bench.row(
        "FastAPI + SQLAlchemy insert + Celery send_task, 32 connections (uvicorn 1 process)",
        f"{rate:,.0f}/s, p50 {p50}, p99 {p99}; {usage.per_thousand(rate * SECONDS)}",
        f"Conveyor's single create does {single / rate:.1f} times this" if single else "",
        "Conveyor ≥ 5 times this" if single else "",
        bool(single and single >= 5 * rate),
    )
    ours = bench.figures.api_cpu
    if ours is not None and cpu:
        bench.row(
            "API process CPU per 1,000 single creates, Conveyor against the anchor",
            f"{ours:.2f} s against {cpu:.2f} s ({ours / cpu:.0%})",
            "",
            "≤ 20% of the anchor's",
            ours <= 0.2 * cpu,
        )


@contextmanager
def baseline(bench: Bench) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """uvicorn, one process, and a Celery worker, prefork with 2 processes."""
    settings = {
        **os.environ,
        "BASELINE_DATABASE_URL": bench.dsn.replace("postgresql://", "postgresql+asyncpg://"),
        "BASELINE_AMQP_URL": bench.amqp_url,
        "BASELINE_PREFIX": f"{bench.prefix}-celery",
    }
    procs = [subprocess.Popen(command, env=settings) for command in _COMMANDS]
    try:
        _wait_started()
        yield procs[0], procs[1]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_started() -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{PORT}/docs").raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise SystemExit("the baseline did not start") from None
            time.sleep(0.2)
