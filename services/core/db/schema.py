"""Is the database at the schema this code expects? Light enough for every process.

Alembic makes the schema (services.core.db.migrate); the API, the workers and the
operator only check it, without importing Alembic.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

# The newest revision in migrations/versions; a test keeps the two equal.
SCHEMA_REVISION = "0013"


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    async with engine.connect() as connection:
        exists = await connection.scalar(sa.text("SELECT to_regclass('alembic_version')"))
        if exists is None:
            return None
        version = await connection.scalar(sa.text("SELECT version_num FROM alembic_version"))
        return str(version) if version is not None else None


async def wait_for_schema(engine: AsyncEngine, poll_seconds: float = 2.0) -> None:
    """Return once the database is at the revision the code expects; until then, wait.

    API and worker call this before taking work, so a rollout that starts them before
    the migration Job has finished waits instead of failing on a missing column.
    """
    while True:
        try:
            found = await current_revision(engine)
        except Exception as error:  # noqa: BLE001 - any failure here means "not yet"
            found = f"unreachable ({type(error).__name__})"
        if found == SCHEMA_REVISION:
            return
        logger.warning("waiting for the schema: at %s, expecting %s", found, SCHEMA_REVISION)
        await asyncio.sleep(poll_seconds)


async def ensure_database(database_url: str) -> None:
    """Create the database named in `database_url` when it does not exist yet."""
    url = make_url(database_url)
    try:
        connection = await asyncpg.connect(plain_dsn(url))
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(plain_dsn(url.set(database="postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{url.database}"')
        finally:
            await admin.close()
    else:
        await connection.close()


def plain_dsn(url: URL | str) -> str:
    """The URL of the database for asyncpg itself, without SQLAlchemy's driver name."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
