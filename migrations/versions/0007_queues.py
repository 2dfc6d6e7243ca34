"""Queues: each task belongs to one, and claims, limits and pauses are per queue.

- tasks.queue (existing tasks: "default"); the claimable indexes and the running count
  are led by it, so a claim reads only its own queue's tasks; listing by a queue other
  than default has an index of its own.
- queues: what can change while the service runs: whether a queue is paused, and the
  next start its rate allows. Its definitions (name, limits) come from the settings.
- API keys may hold the platform scope (pausing queues), given only by the platform.

The indexes are built concurrently, so tasks stay writable while they are; a retry after
a failed build starts again where it stopped (see migrations/concurrently.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.migrations import concurrently

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_SCOPES = "'submit', 'read', 'cancel', 'admin'"
CLAIMABLE = "status = 'PENDING' AND queued_at IS NOT NULL"
CLAIM_INDEXES = ("ix_tasks_claimable_priority", "ix_tasks_claimable_age")


def upgrade() -> None:
    # Repeatable, as a retry after a failed index build below runs it again. A constant
    # default: PostgreSQL adds the column without rewriting the table.
    op.add_column(
        "tasks",
        sa.Column("queue", sa.Text, nullable=False, server_default="default"),
        if_not_exists=True,
    )
    # Added without a scan under the write lock, then validated under a lighter one.
    op.execute("""
        DO $$ BEGIN
            ALTER TABLE tasks ADD CONSTRAINT ck_tasks_queue_name
                CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,62}$') NOT VALID;
        EXCEPTION WHEN duplicate_object THEN NULL;
        END $$
    """)
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_queue_name")
        _claim_indexes(["queue", "tenant"])
        concurrently.build(
            "ix_tasks_running_queue",
            "tasks",
            ["queue", "tenant"],
            postgresql_where=sa.text("status = 'IN_PROGRESS'"),
        )
        # Listing by queue: only tasks of queues other than default have entries, so the
        # common case pays nothing at its status changes (listing default walks the plain
        # newest-first index, which it mostly fills).
        concurrently.build(
            "ix_tasks_queue_created",
            "tasks",
            ["tenant", "queue", sa.text("created_at DESC"), sa.text("id DESC")],
            postgresql_where=sa.text("queue <> 'default'"),
        )
    for name in CLAIM_INDEXES:
        concurrently.take_name(name)
    op.create_table(
        "queues",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        # The earliest time the queue's rate lets the next task start.
        sa.Column(
            "next_start", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    _scopes(f"{_SCOPES}, 'platform'")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        concurrently.drop("ix_tasks_queue_created", "tasks")
        concurrently.drop("ix_tasks_running_queue", "tasks")
        _claim_indexes(["tenant"])
    for name in CLAIM_INDEXES:
        concurrently.take_name(name)
    # Keys lose the platform scope; a key that held nothing else is gone.
    op.execute("DELETE FROM api_keys WHERE scopes = ARRAY['platform']")
    op.execute("UPDATE api_keys SET scopes = array_remove(scopes, 'platform')")
    _scopes(_SCOPES)
    op.drop_table("queues")
    op.drop_constraint("ck_tasks_queue_name", "tasks", type_="check")
    op.drop_column("tasks", "queue")


def _claim_indexes(leading: list[str]) -> None:
    """The most urgent claimable task, and the longest-waiting one, led by `leading`:
    built beside the ones there, which they replace (in the autocommit block)."""
    concurrently.rebuild(
        "ix_tasks_claimable_priority",
        "tasks",
        [*leading, sa.text("priority DESC"), "available_at"],
        postgresql_where=sa.text(CLAIMABLE),
    )
    concurrently.rebuild(
        "ix_tasks_claimable_age",
        "tasks",
        [*leading, "available_at"],
        postgresql_where=sa.text(CLAIMABLE),
    )


def _scopes(allowed: str) -> None:
    op.drop_constraint("ck_api_keys_scopes", "api_keys", type_="check")
    op.create_check_constraint(
        "ck_api_keys_scopes",
        "api_keys",
        f"scopes <@ ARRAY[{allowed}] AND cardinality(scopes) > 0",
    )
