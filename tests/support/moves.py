"""Every status change PostgreSQL makes during a test run, recorded by triggers, so that the
tests can hold the SQL to the domain's table of transitions (services.core.domain)."""

from __future__ import annotations

from services.core.domain import QUEUED, TRANSITIONS
from tests.support.database import connect

# Moves from "" are insertions: a task is born NEW, or PENDING when scheduled for later.
ALLOWED = {("", status.value) for status in QUEUED} | {
    (before.value, after.value) for before, afters in TRANSITIONS.items() for after in afters
}

# Statement-level triggers with transition tables: one insertion per statement, not per row.
_RECORDER = """
CREATE TABLE conveyor_test_moves (
    before text NOT NULL, after text NOT NULL, PRIMARY KEY (before, after));
CREATE FUNCTION conveyor_test_record_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conveyor_test_moves
    SELECT DISTINCT o.status, n.status FROM old_rows o JOIN new_rows n USING (id)
    WHERE o.status <> n.status
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE FUNCTION conveyor_test_record_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conveyor_test_moves SELECT DISTINCT '', status FROM new_rows
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER conveyor_test_updates AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor_test_record_updates();
CREATE TRIGGER conveyor_test_inserts AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor_test_record_inserts();
"""


async def record_moves(database_url: str) -> None:
    """From now on, record each (before, after) status pair the tasks table sees."""
    connection = await connect(database_url)
    try:
        await connection.execute(_RECORDER)
    finally:
        await connection.close()


async def recorded_moves(database_url: str) -> set[tuple[str, str]]:
    """Every (before, after) pair recorded so far; before is "" for an insertion."""
    connection = await connect(database_url)
    try:
        rows = await connection.fetch("SELECT before, after FROM conveyor_test_moves")
    finally:
        await connection.close()
    return {(row["before"], row["after"]) for row in rows}


def outside_the_table(moves: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The moves that domain.TRANSITIONS does not allow."""
    return moves - ALLOWED
