"""The test run's servers and settings: where PostgreSQL and RabbitMQ are, databases made
for a run, and settings with short intervals."""

from __future__ import annotations

import asyncio
import json
import os

import aio_pika
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from services.core.amqp.topology import Topology
from services.core.settings import Settings

CI = os.environ.get("CI") == "true"
ADMIN_URL = os.environ.get(
    "CONVEYOR_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# Every queue a test may define: emptied before each test, deleted after the run.
TEST_QUEUES = ("default", "gpu", "slow", "partner")


def unreachable(what: str, error: BaseException) -> None:
    """Fail, saying how to bring the servers up: a test that needs one never skips."""
    pytest.fail(f"{what} is unreachable: {error} (bash scripts/dev-services starts both)")


def _dsn(database: str) -> str:
    url = make_url(ADMIN_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(_dsn(make_url(ADMIN_URL).database or "postgres"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def create_database(name: str) -> str:
    """Create an empty database; answer its SQLAlchemy URL."""
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a `conveyor` process these settings."""
    values = settings.model_dump(mode="json")
    values["task_modules"] = ",".join(settings.task_modules)
    values["worker_queues"] = ",".join(settings.worker_queues)
    values["queues"] = json.dumps(values["queues"])
    return {**os.environ, **{f"CONVEYOR_{k.upper()}": str(v) for k, v in values.items()}}


def make_settings(database_url: str, amqp_prefix: str, **overrides: object) -> Settings:
    """Settings with short intervals, so that tests wait milliseconds, not seconds."""
    values: dict[str, object] = {
        "database_url": database_url,
        "amqp_url": AMQP_URL,
        "amqp_prefix": amqp_prefix,
        "database_pool_size": 4,
        # Below the pool, as the README asks: a request in its tenant's line holds no
        # connection, so one waiting for the pool never waits long.
        "tenant_max_requests": 3,
        "relay_interval_seconds": 0.2,
        "recovery_interval_seconds": 0.2,
        "heartbeat_seconds": 0.2,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "drain_seconds": 5,
        "worker_concurrency": 4,
        "worker_metrics_port": 0,
        # Keys are tested on their own (tests/security); elsewhere the API is open.
        "auth_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def empty(database_url: str, amqp_prefix: str) -> None:
    """Empty the tables and the task queue of a run, for the next test."""
    connection = await asyncpg.connect(_dsn(make_url(database_url).database or ""))
    try:
        await connection.execute(
            "TRUNCATE tasks, task_attempts, attempt_logs, api_keys, queues, schedules, workers,"
            " kinds"
        )
    finally:
        await connection.close()
    broker = await aio_pika.connect(AMQP_URL)
    async with broker:
        for name in TEST_QUEUES:
            channel = await broker.channel()  # a channel closes on a queue that is not there
            try:
                queue = await channel.declare_queue(Topology(amqp_prefix).queue(name), passive=True)
            except aio_pika.exceptions.ChannelClosed:
                continue
            await queue.purge()
