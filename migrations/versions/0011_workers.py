"""The worker registry: a row per running worker process, kept by its heartbeat.

A worker writes its row when it starts (services/core/db/workers.py), renews it with
every heartbeat (how many tasks it runs, whether it drains, when it was last seen, and
`expires_at`: last seen plus its lease), and deletes it when it exits. A worker that died
leaves its row, which reads gone once `expires_at` has passed and is deleted later by the
heartbeat of any other worker. Nothing about a task depends on this table.

Every worker updates its row a few times a second: room is left on each page
(fillfactor 50) so that an update stays on its page (HOT: no index entry written).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE IF NOT EXISTS workers (
            id text PRIMARY KEY,
            host text NOT NULL,
            version text NOT NULL,
            queues text[] NOT NULL,
            kinds text[] NOT NULL,
            concurrency integer NOT NULL CHECK (concurrency >= 1),
            running integer NOT NULL DEFAULT 0 CHECK (running >= 0),
            draining boolean NOT NULL DEFAULT false,
            started_at timestamptz NOT NULL DEFAULT now(),
            last_seen_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL
        ) WITH (fillfactor = 50)
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS workers")
