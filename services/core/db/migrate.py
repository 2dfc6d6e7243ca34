"""Run the Alembic migrations from code: `conveyor migrate` and the tests use this."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

SCRIPT_LOCATION = "migrations:"


def alembic_config(database_url: str) -> Config:
    """An Alembic config for `database_url` that needs no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the schema up to `revision`. Blocking: call it outside the event loop."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Migrate the schema down to `revision`. Blocking: call it outside the event loop."""
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str:
    """The revision the code expects."""
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


async def wait_for_schema(engine: AsyncEngine, poll_seconds: float = 2.0) -> None:
    """Return once the database is at the revision the code expects; until then, wait.

    API and worker call this before taking work, so a rollout that starts them before
    the migration Job has finished waits instead of failing on a missing column.
    """
    expected = head_revision()
    while True:
        try:
            found = await current_revision(engine)
        except Exception as error:  # noqa: BLE001 - any failure here means "not yet"
            found = f"unreachable ({type(error).__name__})"
        if found == expected:
            return
        logger.warning("waiting for the schema: at %s, expecting %s", found, expected)
        await asyncio.sleep(poll_seconds)


async def ensure_database(database_url: str) -> None:
    """Create the database named in `database_url` when it does not exist yet."""
    url = make_url(database_url)
    try:
        connection = await asyncpg.connect(_dsn(url))
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(_dsn(url.set(database="postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{url.database}"')
        finally:
            await admin.close()
    else:
        await connection.close()


def _dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
