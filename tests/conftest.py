"""Fixtures: a fresh database per run, a private queue namespace, and clean state per test.

Integration tests talk to the real PostgreSQL and RabbitMQ. When one cannot be reached
the tests fail in CI (CI=true) and are skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import aio_pika
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from services.core.amqp.topology import Topology
from services.core.db.engine import create_engine
from services.core.db.keys import SqlKeyStore
from services.core.db.migrate import upgrade
from services.core.db.store import SqlTaskStore
from services.core.settings import Settings
from tests.support.rabbit import PrivateRabbit, rabbitmq_available
from tests.support.services import free_port

CI = os.environ.get("CI") == "true"
ADMIN_URL = os.environ.get(
    "CONVEYOR_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def unreachable(what: str, error: BaseException) -> None:
    message = f"{what} is unreachable: {error}"
    if CI:
        pytest.fail(message)
    pytest.skip(message)


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


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database made for this run and migrated to the latest revision."""
    name = f"conveyor_test_{uuid.uuid4().hex[:8]}"
    try:
        url = create_database(name)
    except (OSError, asyncpg.PostgresError) as error:
        unreachable("PostgreSQL", error)
    upgrade(url)
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def amqp_prefix() -> Iterator[str]:
    """A queue namespace for this run; its queue is deleted at the end."""
    prefix = f"conveyor-test-{uuid.uuid4().hex[:8]}"
    yield prefix

    async def delete() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(Topology(prefix).queue)
            await channel.exchange_delete(Topology(prefix).exchange)

    try:
        asyncio.run(delete())
    except Exception:  # noqa: BLE001 - nothing to clean when it was never declared
        pass


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a `conveyor` process these settings."""
    values = settings.model_dump(mode="json")
    values["task_modules"] = ",".join(settings.task_modules)
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


@pytest.fixture
async def settings(database_url: str, amqp_prefix: str) -> AsyncIterator[Settings]:
    """Settings for one test, after emptying the tasks table and the task queue."""
    try:
        await _empty(database_url, amqp_prefix)
    except (OSError, aio_pika.exceptions.AMQPError) as error:
        unreachable("RabbitMQ", error)
    yield make_settings(database_url, amqp_prefix)


async def _empty(database_url: str, amqp_prefix: str) -> None:
    connection = await asyncpg.connect(_dsn(make_url(database_url).database or ""))
    try:
        await connection.execute("TRUNCATE tasks, api_keys")
    finally:
        await connection.close()
    broker = await aio_pika.connect(AMQP_URL)
    async with broker:
        channel = await broker.channel()
        try:
            queue = await channel.declare_queue(Topology(amqp_prefix).queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return
        await queue.purge()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SqlTaskStore]:
    engine = create_engine(settings)
    yield SqlTaskStore(engine)
    await engine.dispose()


@pytest.fixture
async def keys(settings: Settings) -> AsyncIterator[SqlKeyStore]:
    """The key store, on the test's emptied database."""
    engine = create_engine(settings)
    yield SqlKeyStore(engine)
    await engine.dispose()


@pytest.fixture
async def private_rabbit() -> AsyncIterator[Callable[..., PrivateRabbit]]:
    """Make private RabbitMQ nodes on free ports (not started); all destroyed afterwards."""
    if not rabbitmq_available():
        unreachable("rabbitmq-server", FileNotFoundError("not installed"))
    nodes: list[PrivateRabbit] = []

    def make(**options: object) -> PrivateRabbit:
        port = free_port()
        while port + 20000 > 65535:
            port = free_port()
        nodes.append(PrivateRabbit(port, **options))  # type: ignore[arg-type]
        return nodes[-1]

    yield make
    for node in nodes:
        await asyncio.to_thread(node.destroy)
