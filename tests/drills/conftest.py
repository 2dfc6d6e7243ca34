"""Failure drills: a steady submit load against private PostgreSQL and RabbitMQ instances,
while a worker is killed, a server restarts, or the workers scale to zero and back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest

from services.core.db.migrate import upgrade
from services.core.db.schema import ensure_database
from services.core.settings import Settings
from tests.support.env import AMQP_URL, make_settings, unreachable
from tests.support.postgres import PrivatePostgres, postgres_available
from tests.support.processes import start_worker_process, worker_log
from tests.support.rabbit import PrivateRabbit, rabbitmq_available
from tests.support.services import free_port, running_api

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
logger = logging.getLogger(__name__)

# Every move into COMPLETED is written down by the database itself, so a task completed
# twice (by whatever path) cannot go unseen.
AUDIT = """
CREATE TABLE completions (task_id uuid NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION audit_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO completions (task_id) VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER audit_completion AFTER UPDATE ON tasks FOR EACH ROW
WHEN (NEW.status = 'COMPLETED' AND OLD.status IS DISTINCT FROM 'COMPLETED')
EXECUTE FUNCTION audit_completion();
"""


def _free_pair() -> int:
    port = free_port()
    while port + 20000 > 65535:
        port = free_port()
    return port


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PrivatePostgres, PrivateRabbit]]:
    """A private PostgreSQL and RabbitMQ for the drills, started once per module."""
    if not (postgres_available() and rabbitmq_available()):
        unreachable("private PostgreSQL and RabbitMQ", FileNotFoundError("not installed"))
    postgres, rabbit = PrivatePostgres(free_port()), PrivateRabbit(_free_pair())
    try:
        postgres.start()
        rabbit.start()
        url = postgres.url("conveyor")
        asyncio.run(ensure_database(url))
        upgrade(url)
        asyncio.run(_execute(url, AUDIT))
        yield postgres, rabbit
    finally:
        rabbit.destroy()
        postgres.destroy()


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@dataclass
class Drill:
    """A steady load of short tasks, and the count of what became of them."""

    api: httpx.AsyncClient
    database_url: str
    settings: Settings
    accepted: list[str] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    workers: list[subprocess.Popen[str]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _load: asyncio.Task[None] | None = None

    async def start_workers(self, count: int) -> None:
        """Start `count` worker processes; return once each has its signal handlers (on a
        loaded machine, a worker still importing would die of a SIGTERM, not drain)."""
        started = [start_worker_process(self.settings) for _ in range(count)]
        self.workers += started
        for worker in started:
            async with asyncio.timeout(60):
                while "taking up to" not in worker_log(worker):
                    assert worker.poll() is None, worker_log(worker)
                    await asyncio.sleep(0.1)

    async def signal_workers(self, signum: int, count: int | None = None) -> list[int]:
        """Send `signum` to the first `count` live workers; answer their exit codes."""
        chosen = [w for w in self.workers if w.poll() is None][:count]
        for worker in chosen:
            worker.send_signal(signum)
        codes = [await asyncio.to_thread(w.wait, 60) for w in chosen]
        self.workers = [w for w in self.workers if w not in chosen]
        return codes

    def start_load(self, rate: float = 20) -> None:
        self._load = asyncio.create_task(self._submit(rate))

    async def _submit(self, rate: float) -> None:
        period = 1 / rate
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = await self.api.post(
                    "/api/v1/tasks",
                    json={"title": "drill", "kind": "sleep", "payload": {"seconds": 0.2}},
                )
                self.answers[response.status_code] += 1
                if response.status_code == 201:
                    self.accepted.append(response.json()["id"])
            except httpx.TransportError:
                self.answers[0] += 1
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    async def run_load(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def finish(self, bound: float = 60) -> dict[str, int]:
        """Stop the load, wait for every accepted task to end, and count."""
        self._stop.set()
        if self._load is not None:
            await self._load
        deadline = time.monotonic() + bound
        while (report := await self._count())["unfinished"] and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        if report["unfinished"]:
            report["left"] = await self._left()  # type: ignore[assignment]
            for worker in self.workers:
                logger.warning("worker log:\n%s", worker_log(worker)[-3000:])
        return report

    async def _left(self) -> str:
        connection = await asyncpg.connect(self.database_url.replace("+asyncpg", ""))
        try:
            rows = await connection.fetch(
                "SELECT status, queued_at IS NOT NULL AS queued, attempts, count(*) FROM tasks "
                "WHERE id = ANY($1::uuid[]) AND status NOT IN ('COMPLETED', 'FAILED', "
                "'CANCELLED') GROUP BY 1, 2, 3",
                self.accepted,
            )
        finally:
            await connection.close()
        return str([dict(r) for r in rows])

    async def _count(self) -> dict[str, int]:
        connection = await asyncpg.connect(self.database_url.replace("+asyncpg", ""))
        try:
            ids = self.accepted
            statuses = dict(
                await connection.fetch(
                    "SELECT status, count(*) FROM tasks WHERE id = ANY($1::uuid[]) GROUP BY 1", ids
                )
            )
            doubled = await connection.fetchval(
                "SELECT count(*) FROM (SELECT task_id FROM completions "
                "GROUP BY task_id HAVING count(*) > 1) AS twice"
            )
        finally:
            await connection.close()
        finished = sum(statuses.get(s, 0) for s in TERMINAL)
        return {
            "submitted": len(ids),
            "completed": statuses.get("COMPLETED", 0),
            "unfinished": len(ids) - finished,
            "lost": len(ids) - sum(statuses.values()),
            "doubly_completed": int(doubled),
            "answered_503": self.answers[503],
            "answered_5xx_other": sum(
                n for code, n in self.answers.items() if code >= 500 and code != 503
            ),
        }


@pytest.fixture
async def drill(
    servers: tuple[PrivatePostgres, PrivateRabbit], amqp_prefix: str
) -> AsyncIterator[Callable[[], Drill]]:
    postgres, rabbit = servers
    url = postgres.url("conveyor")
    await _execute(url, "TRUNCATE tasks, task_attempts, attempt_logs, completions")
    settings = make_settings(
        url,
        f"{amqp_prefix}-drill",
        amqp_url=rabbit.url,
        lease_seconds=2.0,
        heartbeat_seconds=0.3,
        lost_message_seconds=3.0,
        worker_concurrency=8,
        drain_seconds=5.0,
        retry_base_seconds=0.1,
        retry_max_seconds=0.5,
    )
    async with running_api(settings) as api:
        current = Drill(api, url, settings)
        yield lambda: current
        with contextlib.suppress(Exception):
            await current.signal_workers(signal.SIGKILL)


def assert_nothing_lost(report: dict[str, int]) -> None:
    assert report["submitted"] > 0, report
    assert report["lost"] == 0, report
    assert report["unfinished"] == 0, report
    assert report["doubly_completed"] == 0, report
    assert report["completed"] == report["submitted"], report
    assert report["answered_5xx_other"] == 0, report


__all__ = ["AMQP_URL", "Drill", "assert_nothing_lost"]
