"""Kinds registered by workers: the API accepts what workers run without importing it.

`kinds` holds one row per version of a kind: its name, the queue its tasks go to, its
per-attempt time limit, a line describing it and the JSON Schema of its payload (null:
any JSON object), as a worker read them from its code. `digest` names that version (a
hash of all of it), so a worker started with the same code registers nothing new.

`workers.kind_digests` says which versions each worker runs. The API accepts a kind's
payload when it fits a version that a live worker runs or, while no worker runs it (a
pool scaled to zero), the version registered last. A version that is neither, and
older than a day, is deleted by the next registration of its kind.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE IF NOT EXISTS kinds (
            digest text PRIMARY KEY,
            name text NOT NULL,
            queue text NOT NULL,
            timeout_seconds double precision CHECK (timeout_seconds > 0),
            description text NOT NULL DEFAULT '',
            payload_schema jsonb CHECK (jsonb_typeof(payload_schema) = 'object'),
            version text NOT NULL,
            registered_at timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE INDEX IF NOT EXISTS ix_kinds_name ON kinds (name, registered_at)")
    # A column with a constant default: no rewrite of the table, but a short exclusive
    # lock; waiting behind a long transaction it would hold up every heartbeat, so give up
    # after a few seconds (the migration is run again) rather than queue them.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        "ALTER TABLE workers ADD COLUMN IF NOT EXISTS kind_digests text[] NOT NULL DEFAULT '{}'"
    )
    op.execute("SET LOCAL lock_timeout = DEFAULT")  # the later revisions' own


def downgrade() -> None:
    op.execute("ALTER TABLE workers DROP COLUMN IF EXISTS kind_digests")
    op.execute("DROP TABLE IF EXISTS kinds")
