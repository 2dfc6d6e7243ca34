"""Rate limits shared by every API process: one row per API key in use, the time up to
which its requests are spent (a bucket, as services.core.db.limits reads it).

UNLOGGED: its writes skip the WAL and are not replicated, since a request updates its
key's row. After a crash or a failover the table is empty: every key's bucket is full
again, which is all that is lost. Room is left on each page (fillfactor 50) so that an
update stays on its page (HOT: no index entry written).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE UNLOGGED TABLE IF NOT EXISTS rate_limits (
            key_id text PRIMARY KEY,
            spent_until timestamptz NOT NULL
        ) WITH (fillfactor = 50)
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS rate_limits")
