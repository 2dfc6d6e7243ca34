"""The migration stairway: every revision upgrades, downgrades and upgrades again."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from services.core.db.engine import create_engine
from services.core.db.migrate import alembic_config, downgrade, head_revision, upgrade
from services.core.db.schema import SCHEMA_REVISION, current_revision
from services.core.settings import Settings
from tests.support.env import create_database, drop_database


@contextlib.asynccontextmanager
async def _scratch_database(purpose: str) -> AsyncIterator[str]:
    """A database of its own for one test, at no revision; dropped afterwards."""
    name = f"conveyor_{purpose}_{uuid.uuid4().hex[:8]}"
    url = await asyncio.to_thread(create_database, name)
    try:
        yield url
    finally:
        await asyncio.to_thread(drop_database, make_url(url).database or name)


def _revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(""))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


async def test_stairway(database_url: str) -> None:
    async with _scratch_database("stairway") as url:
        revisions = _revisions()
        assert revisions[-1] == head_revision()
        previous = ["base", *revisions[:-1]]
        for revision, before in zip(revisions, previous, strict=True):
            await asyncio.to_thread(upgrade, url, revision)
            await asyncio.to_thread(downgrade, url, before)
            await asyncio.to_thread(upgrade, url, revision)
        engine = create_engine(Settings(database_url=url))
        try:
            assert await current_revision(engine) == head_revision()
        finally:
            await engine.dispose()


@pytest.mark.unit
def test_the_code_expects_the_newest_revision() -> None:
    assert head_revision() == SCHEMA_REVISION, "update SCHEMA_REVISION with each migration"


async def _sql(url: str, statement: str) -> list[tuple[object, ...]]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await connection.fetch(statement)]
    finally:
        await connection.close()


async def test_tenants_keep_existing_tasks_and_come_out_again_cleanly() -> None:
    insert = (
        "INSERT INTO tasks (id, title, priority, status, kind, idempotency_key{col}) "
        "VALUES (gen_random_uuid(), '{title}', 2, 'NEW', 'demo', 'k'{val})"
    )
    async with _scratch_database("tenants") as url:
        await asyncio.to_thread(upgrade, url, "0002")
        await _sql(url, insert.format(col="", title="before", val=""))
        await asyncio.to_thread(upgrade, url, "0003")
        await _sql(url, insert.format(col=", tenant", title="other", val=", 'team-b'"))
        assert await _sql(url, "SELECT title, tenant FROM tasks ORDER BY title") == [
            ("before", "default"),
            ("other", "team-b"),
        ]

        await asyncio.to_thread(downgrade, url, "0002")

        assert await _sql(url, "SELECT title, idempotency_key FROM tasks ORDER BY title") == [
            ("before", "k"),
            ("other", None),
        ]


async def test_infinite_times_stored_before_are_brought_into_range_and_refused_after() -> None:
    insert = (
        "INSERT INTO tasks (id, title, priority, status, kind, scheduled_at, available_at)"
        " VALUES (gen_random_uuid(), '{title}', 2, 'PENDING', 'demo', '{at}', '{at}')"
    )
    async with _scratch_database("finite") as url:
        await asyncio.to_thread(upgrade, url, "0003")
        await _sql(url, insert.format(title="late", at="infinity"))
        await _sql(url, insert.format(title="early", at="-infinity"))
        await asyncio.to_thread(upgrade, url, "0004")
        rows = await _sql(
            url,
            "SELECT title, scheduled_at = available_at,"
            " extract(year FROM scheduled_at),"
            " scheduled_at = created_at FROM tasks ORDER BY title",
        )
        assert rows == [("early", True, rows[0][2], True), ("late", True, 9999, False)]
        with pytest.raises(asyncpg.CheckViolationError):
            await _sql(url, insert.format(title="again", at="infinity"))


async def test_status_invariants_are_validated_on_upgrade_and_held_after() -> None:
    insert = (
        "INSERT INTO tasks (id, title, priority, status, kind, available_at, finished_at)"
        " VALUES (gen_random_uuid(), '{title}', 2, '{status}', 'demo', now(), {finished})"
    )
    async with _scratch_database("invariants") as url:
        await asyncio.to_thread(upgrade, url, "0004")
        await _sql(url, insert.format(title="done", status="COMPLETED", finished="now()"))
        await _sql(url, insert.format(title="bad", status="COMPLETED", finished="NULL"))
        # A row that breaks one stops the upgrade, naming the constraint.
        with pytest.raises(Exception, match="ck_tasks_finished_when_terminal"):
            await asyncio.to_thread(upgrade, url, "0005")
        await _sql(url, "DELETE FROM tasks WHERE title = 'bad'")
        await asyncio.to_thread(upgrade, url, "0005")
        for statement, constraint in [
            ("UPDATE tasks SET status = 'PENDING'", "finished_when_terminal"),
            ("UPDATE tasks SET lease_expires_at = now()", "lease_when_running"),
            ("UPDATE tasks SET status = 'DONE', finished_at = NULL", "ck_tasks_status"),
            ("UPDATE tasks SET attempts = -1", "attempts_counted"),
        ]:
            with pytest.raises(asyncpg.CheckViolationError, match=constraint):
                await _sql(url, statement)


async def test_idempotency_keys_stay_unique_and_the_previous_insert_still_works() -> None:
    """0006 adds the partial unique index the service names, and keeps the full constraint
    that the previous version's ON CONFLICT names while a rollout replaces its pods."""
    insert = (
        "INSERT INTO tasks (id, tenant, title, priority, status, kind, available_at,"
        " idempotency_key) VALUES (gen_random_uuid(), '{tenant}', 't', 2, 'NEW', 'demo',"
        " now(), {key}) ON CONFLICT (tenant, idempotency_key){partial} DO NOTHING"
        " RETURNING id"
    )
    partial = " WHERE idempotency_key IS NOT NULL"
    indexes = (
        "SELECT indexname FROM pg_indexes WHERE tablename = 'tasks'"
        " AND indexdef LIKE '%idempotency_key%' AND indexdef LIKE '%WHERE%'"
    )
    async with _scratch_database("keys") as url:
        await asyncio.to_thread(upgrade, url, "0005")
        await _sql(url, insert.format(tenant="a", key="'k'", partial=""))
        await asyncio.to_thread(upgrade, url, "0006")
        assert await _sql(url, indexes) == [("uq_tasks_tenant_idempotency_key_partial",)]
        for form in ("", partial):  # the previous version's insert, and this one's
            assert await _sql(url, insert.format(tenant="a", key="'k'", partial=form)) == []
            assert len(await _sql(url, insert.format(tenant="b", key="'k2'", partial=form))) <= 1
        for _ in range(2):  # keyless tasks never conflict
            assert len(await _sql(url, insert.format(tenant="a", key="NULL", partial=partial))) == 1
        await asyncio.to_thread(downgrade, url, "0005")
        assert await _sql(url, indexes) == []
