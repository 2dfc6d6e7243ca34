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
from bench.wrk import wrk

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
    with baseline(bench):
        rate, p50, p99 = wrk(bench, "/tasks", 32, post="post.lua", base=f"http://127.0.0.1:{PORT}")
    single = bench.figures.single_create
    bench.row(
        "FastAPI + SQLAlchemy insert + Celery send_task, 32 connections (uvicorn 1 process)",
        f"{rate:,.0f}/s, p50 {p50}, p99 {p99}",
        f"Conveyor's single create does {single / rate:.1f} times this" if single else "",
        "Conveyor ≥ 5 times this" if single else "",
        bool(single and single >= 5 * rate),
    )


@contextmanager
def baseline(bench: Bench) -> Iterator[None]:
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
        yield
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
