"""What the bench's sections share: one `Bench` per run, passed to each of them.

It says where the servers are, holds the API key and the rows measured so far, and
carries the figures a later section compares with (the machine's limits, the API's
create rate and memory). Nothing is kept in module globals.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# The run's own database, made anew and dropped at the end.
DATABASE = "conveyor_bench"
API_PORT = 8787
# A line of the table: what was measured, the figure, the goal, the machine's limit beside.
Row = tuple[str, str, str, str]


@dataclass
class Figures:
    """What one section measured that a later one compares with."""

    # The machine's limits: PostgreSQL committed inserts, RabbitMQ publishes and consumes.
    inserts: float = 0.0
    published: float = 0.0
    consumed: float = 0.0
    # The API's single create at 32 connections, and its peak memory: the api section's.
    single_create: float | None = None
    api_peak_mb: float | None = None
    # CPU seconds the API process spent per 1,000 single creates at 32 connections.
    api_cpu: float | None = None


@dataclass
class Bench:
    """One run of the bench: where its servers are, its key, its rows, its figures."""

    admin_dsn: str
    amqp_url: str
    prefix: str
    drain_tasks: int = 20_000
    list_rows: int = 10_000_000
    api_port: int = API_PORT
    # Requests carry an API key, as in the chart: its lookup and check are in each figure.
    auth: dict[str, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    figures: Figures = field(default_factory=Figures)

    @classmethod
    def from_environment(cls, drain_tasks: int, list_rows: int) -> Bench:
        """The local servers, or CONVEYOR_BENCH_ADMIN_DSN and CONVEYOR_BENCH_AMQP_URL."""
        return cls(
            admin_dsn=os.environ.get(
                "CONVEYOR_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
            ),
            amqp_url=os.environ.get(
                "CONVEYOR_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
            ),
            prefix=f"conveyor-bench-{uuid.uuid4().hex[:6]}",
            drain_tasks=drain_tasks,
            list_rows=list_rows,
        )

    @property
    def dsn(self) -> str:
        """The run's own database."""
        return self.admin_dsn.rsplit("/", 1)[0] + f"/{DATABASE}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def row(
        self, what: str, figure: str, against: str = "", goal: str = "", met: bool | None = None
    ) -> None:
        """One line of the table; `goal` with whether this run `met` it, when there is one."""
        if goal:
            goal = f"{goal}: {'met' if met else 'not met'}"
        self.rows.append((what, figure, goal, against))
        print(f"  {what}: {figure} {against} {goal}", file=sys.stderr, flush=True)

    def env(self, **more: str) -> dict[str, str]:
        """The environment of a `conveyor` process of this run, with `more` settings."""
        return {
            **os.environ,
            "CONVEYOR_DATABASE_URL": self.dsn.replace("postgresql://", "postgresql+asyncpg://"),
            "CONVEYOR_AMQP_URL": self.amqp_url,
            "CONVEYOR_AMQP_PREFIX": self.prefix,
            "CONVEYOR_API_PORT": str(self.api_port),
            "CONVEYOR_LOG_LEVEL": "WARNING",
            "CONVEYOR_WORKER_METRICS_PORT": "0",
            # One client sends everything here: a per-key limit would measure only itself.
            "CONVEYOR_RATE_LIMIT": "",
            **{f"CONVEYOR_{name}": value for name, value in more.items()},
        }

    @contextmanager
    def process(self, command: str, **settings: str) -> Iterator[subprocess.Popen[bytes]]:
        """`conveyor COMMAND` running for the block; SIGTERM and a wait after it."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", command], env=self.env(**settings)
        )
        try:
            yield proc
        finally:
            stop(proc, 60)

    def wait_ready(self, base: str | None = None) -> None:
        """Wait until the API at `base` (this run's, by default) is ready."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base or self.api}/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("the API did not become ready")


def stop(proc: subprocess.Popen[bytes], patience: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `patience` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(patience)
    except subprocess.TimeoutExpired:
        proc.kill()


def peak_rss_mb(proc: subprocess.Popen[bytes]) -> float:
    """The process's peak resident memory so far, in MB."""
    status = Path(f"/proc/{proc.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
