"""Index changes that keep a table with rows writable, for the migrations.

A plain CREATE INDEX holds a lock that blocks every write to its table for the whole
build: minutes on a large tasks table, with submits, claims and results waiting. CREATE
INDEX CONCURRENTLY builds beside the writes, and DROP INDEX CONCURRENTLY waits for them
instead of stopping them; neither can run in a transaction, so these run inside
`op.get_context().autocommit_block()`, which commits what the migration did before it.
A migration that fails in or after the block is run again from its start, so what comes
before the block can be repeated, and what comes after commits with the new revision.

A concurrent build that fails (a lock wait cut short, a unique violation, a restart)
leaves an INVALID index behind, which costs every write and serves no query: the next
run drops it and builds again, and keeps a valid one (built before a later step failed).

An index whose definition changes is built beside the old one under a name of its own,
the old one is dropped, and after the block the new one takes the name (a rename blocks
no write): queries have one of them all along.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

NEXT = "_next"


def build(name: str, table: str, columns: Sequence[str | sa.TextClause], **kw: Any) -> None:
    """CREATE INDEX CONCURRENTLY `name`, unless a valid one is there; in the block."""
    if _invalid(name):
        op.drop_index(name, table, postgresql_concurrently=True)
    op.create_index(name, table, columns, postgresql_concurrently=True, if_not_exists=True, **kw)


def drop(name: str, table: str) -> None:
    """DROP INDEX CONCURRENTLY `name`, if it is there; in the block."""
    op.drop_index(name, table, postgresql_concurrently=True, if_exists=True)


def rebuild(name: str, table: str, columns: Sequence[str | sa.TextClause], **kw: Any) -> None:
    """`name` with a new definition, built beside the old one, which is dropped; in the
    block. take_name() gives it the name after the block."""
    build(name + NEXT, table, columns, **kw)
    drop(name, table)


def take_name(name: str) -> None:
    """The index rebuild() made takes its name; after the block."""
    op.execute(f"ALTER INDEX IF EXISTS {name}{NEXT} RENAME TO {name}")


def _invalid(name: str) -> bool:
    """Whether a concurrent build of `name` failed before (never known offline, where the
    one who runs the script sees it fail)."""
    if op.get_context().as_sql:
        return False
    query = sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)")
    return bool(op.get_bind().execute(query, {"name": name}).scalar())
