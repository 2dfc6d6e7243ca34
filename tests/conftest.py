"""Fixtures: a fresh database per run, a private queue namespace, clean state per test;
and the unit tier's marker.

Integration tests talk to the real PostgreSQL and RabbitMQ. When one cannot be reached
the tests fail, saying how to start them (scripts/dev-services): nothing skips. The unit tier
(`python -m pytest -m unit`) is the tests that need none of those, no cluster and no
browser: every test under tests/unit, tests/chart and examples/ that asks for no server's
fixture, and any test elsewhere marked `@pytest.mark.unit`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest

from services.core.amqp.topology import delete_topology
from services.core.db.engine import create_engine
from services.core.db.keys import SqlKeyStore
from services.core.db.migrate import upgrade
from services.core.db.store import SqlTaskStore
from services.core.settings import Settings
from tests.support.env import (
    AMQP_URL,
    TEST_QUEUES,
    create_database,
    drop_database,
    empty,
    make_settings,
    unreachable,
)
from tests.support.moves import outside_the_table, record_moves, recorded_moves
from tests.support.rabbit import PrivateRabbit, rabbitmq_available
from tests.support.services import free_port, running_api

ROOT = Path(__file__).parents[1]
# The examples' own tests run their handlers with conveyor.testing: no server either.
UNIT_FOLDERS = (ROOT / "tests" / "unit", ROOT / "tests" / "chart", ROOT / "examples")
# Every fixture that reaches PostgreSQL or RabbitMQ asks for one of these.
SERVER_FIXTURES = frozenset({"database_url", "amqp_prefix", "private_rabbit"})


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the unit tier; refuse a test marked unit that asks for a server."""
    for item in items:
        servers = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("unit") is not None:
            if servers:
                names = ", ".join(sorted(servers))
                raise pytest.UsageError(f"{item.nodeid} is marked unit but asks for {names}")
        elif _in_unit_folder(item) and not servers:
            item.add_marker(pytest.mark.unit)


def _in_unit_folder(item: pytest.Item) -> bool:
    return any(Path(item.path).is_relative_to(folder) for folder in UNIT_FOLDERS)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database made for this run and migrated to the latest revision."""
    name = f"conveyor_test_{uuid.uuid4().hex[:8]}"
    try:
        url = create_database(name)
    except (OSError, asyncpg.PostgresError) as error:
        unreachable("PostgreSQL", error)
    upgrade(url)
    asyncio.run(record_moves(url))
    yield url
    moves = asyncio.run(recorded_moves(url))
    drop_database(name)
    # Every status change of the whole run, held to the domain's table of transitions.
    assert not outside_the_table(moves), f"moves outside TRANSITIONS: {outside_the_table(moves)}"


@pytest.fixture(scope="session")
def amqp_prefix() -> Iterator[str]:
    """A queue namespace for this run. At the end, the queues and exchanges of this prefix
    and of the ones made from it (`conveyor dev` in the CLI tests) are deleted."""
    prefix = f"conveyor-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    try:
        asyncio.run(delete_topology(AMQP_URL, prefix, f"{prefix}-dev", queues=TEST_QUEUES))
    except (OSError, aio_pika.exceptions.AMQPError):
        pass  # RabbitMQ is gone: the tests that needed it have said so


@pytest.fixture
async def settings(database_url: str, amqp_prefix: str) -> AsyncIterator[Settings]:
    """Settings for one test, after emptying the tasks table and the task queue."""
    try:
        await empty(database_url, amqp_prefix)
    except (OSError, aio_pika.exceptions.AMQPError) as error:
        unreachable("RabbitMQ", error)
    yield make_settings(database_url, amqp_prefix)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real API on a free port, with no worker: tasks stay queued."""
    async with running_api(settings) as client:
        yield client


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
