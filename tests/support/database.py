"""Plain asyncpg access to a test database, for tests that hold locks or count rows
beside the service."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from sqlalchemy.engine import make_url


async def connect(database_url: str) -> asyncpg.Connection:
    """An asyncpg connection to the database of a SQLAlchemy `database_url`."""
    url = make_url(database_url).set(drivername="postgresql")
    return await asyncpg.connect(url.render_as_string(hide_password=False))


async def until_a_lock_waiter(connection: asyncpg.Connection, within: float = 10) -> None:
    """Until another session waits on a lock (one `connection` holds, say)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + within
    while not await connection.fetchval(query):
        assert time.monotonic() < deadline, f"no session waited on a lock within {within} s"
        await asyncio.sleep(0.02)


async def execute(database_url: str, statement: str, *args: object) -> None:
    """Run one statement beside the service, as an operator at a psql prompt would."""
    connection = await connect(database_url)
    try:
        await connection.execute(statement, *args)
    finally:
        await connection.close()


async def expire_lease(database_url: str, task_id: object) -> None:
    """Make the lease of a running task run out now, as if its worker had stopped."""
    await execute(
        database_url,
        "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        task_id,
    )


async def fetch(database_url: str, statement: str, *args: object) -> list[asyncpg.Record]:
    """The rows of one query, read beside the service."""
    connection = await connect(database_url)
    try:
        return list(await connection.fetch(statement, *args))
    finally:
        await connection.close()
