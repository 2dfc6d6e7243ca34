"""The migrations keep the tasks table writable: no index is built on a table that has
rows while a lock blocks its writes, and a retry after a failed concurrent build
finishes the job."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import make_url

from services.core.db.migrate import alembic_config, upgrade
from tests.support.env import create_database, drop_database

# An index built in place: by CREATE INDEX without CONCURRENTLY, or by a UNIQUE or
# PRIMARY KEY constraint added without an index built before (USING INDEX).
_BLOCKING = (
    re.compile(r"CREATE (?:UNIQUE )?INDEX (?!CONCURRENTLY)(?:IF NOT EXISTS )?\w+ ON (\w+)"),
    re.compile(r"ALTER TABLE (\w+) ADD CONSTRAINT \w+ (?:UNIQUE|PRIMARY KEY) \("),
)
_CREATED = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)")
_STEP = re.compile(r"^-- Running (?:upgrade|downgrade) .*$", re.MULTILINE)


def _offline_sql(direction: str, revisions: str) -> str:
    """What `alembic upgrade|downgrade <revisions> --sql` prints."""
    config = alembic_config("postgresql+asyncpg://conveyor@localhost/conveyor")
    config.output_buffer = io.StringIO()
    getattr(command, direction)(config, revisions, sql=True)
    return config.output_buffer.getvalue()


def _blocking_builds(sql: str) -> list[str]:
    """Each statement that builds an index on a table the same step did not create: a
    table that may hold rows, whose writes would wait for the whole build."""
    found = []
    names = _STEP.findall(sql)
    for name, step in zip(names, _STEP.split(sql)[1:], strict=True):
        created = set(_CREATED.findall(step))
        for statement in step.split(";"):
            for pattern in _BLOCKING:
                match = pattern.search(statement)
                if match and match.group(1) not in created:
                    found.append(f"{name}: {' '.join(statement.split())}")
    return found


@pytest.mark.unit
@pytest.mark.parametrize(
    ("direction", "revisions"), [("upgrade", "base:head"), ("downgrade", "head:base")]
)
def test_no_migration_builds_an_index_that_blocks_writes_to_a_table_with_rows(
    direction: str, revisions: str
) -> None:
    sql = _offline_sql(direction, revisions)
    assert _blocking_builds(sql) == []
    assert "CREATE INDEX CONCURRENTLY" in sql


@pytest.mark.unit
def test_the_check_finds_a_plain_index_build() -> None:
    """The check itself: an index built in place on an existing table is found."""
    sql = (
        "-- Running upgrade 0001 -> 0002\n\nCREATE TABLE things (a int);\n\n"
        "CREATE INDEX ix_things ON things (a);\n\nCREATE INDEX ix_tasks ON tasks (a);\n\n"
        "ALTER TABLE tasks ADD CONSTRAINT uq_a UNIQUE (a);\n\n"
        "ALTER TABLE tasks ADD CONSTRAINT uq_b UNIQUE USING INDEX uq_b;\n\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_more ON tasks (a);\n"
    )
    assert [found.split(": ")[1] for found in _blocking_builds(sql)] == [
        "CREATE INDEX ix_tasks ON tasks (a)",
        "ALTER TABLE tasks ADD CONSTRAINT uq_a UNIQUE (a)",
    ]


@contextlib.asynccontextmanager
async def _database() -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A database of its own at no revision, and a connection to it; dropped afterwards."""
    name = f"conveyor_locks_{uuid.uuid4().hex[:8]}"
    url = await asyncio.to_thread(create_database, name)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        yield url, connection
    finally:
        await connection.close()
        await asyncio.to_thread(drop_database, name)


async def _fail_a_concurrent_build(connection: asyncpg.Connection, name: str) -> None:
    """Leave an INVALID index `name` behind, as a concurrent build that failed does."""
    with pytest.raises(asyncpg.UniqueViolationError):
        await connection.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON tasks ((1))")
    assert await connection.fetchval(
        "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", name
    )


_INSERT = (
    "INSERT INTO tasks (id, title, priority, status, kind, available_at)"
    " VALUES (gen_random_uuid(), 't', 2, 'NEW', 'demo', now())"
)
_INDEXES = """
    SELECT indexrelid::regclass::text, indisvalid, pg_get_indexdef(indexrelid)
    FROM pg_index WHERE indrelid = 'tasks'::regclass ORDER BY 1
"""


async def test_an_upgrade_run_again_after_a_failed_build_finishes_with_valid_indexes() -> None:
    """0007 failed in its index builds: its column was added and committed, one build left
    an INVALID index. Run again, it adds nothing twice and ends with the indexes a
    first run makes, all valid; so does 0008 over an INVALID index of its own."""
    async with _database() as (url, connection), _database() as (clean, first_run):
        await asyncio.to_thread(upgrade, url, "0006")
        for _ in range(2):
            await connection.execute(_INSERT)
        await connection.execute(
            "ALTER TABLE tasks ADD COLUMN queue text NOT NULL DEFAULT 'default'"
        )
        await connection.execute(
            "ALTER TABLE tasks ADD CONSTRAINT ck_tasks_queue_name"
            " CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,62}$') NOT VALID"
        )
        await _fail_a_concurrent_build(connection, "ix_tasks_claimable_priority_next")
        await asyncio.to_thread(upgrade, url, "0007")
        await _fail_a_concurrent_build(connection, "ix_tasks_finished")
        await asyncio.to_thread(upgrade, url, "0008")

        await asyncio.to_thread(upgrade, clean, "0008")
        expected = await first_run.fetch(_INDEXES)
        indexes = await connection.fetch(_INDEXES)
        assert [tuple(row) for row in indexes] == [tuple(row) for row in expected]
        assert all(row["indisvalid"] for row in indexes)
        assert await connection.fetchval(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_tasks_queue_name'"
        )
