"""Create the tasks table and the indexes that serve listing, claiming, relaying, recovery.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "'NEW', 'PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED'"
QUEUED = "status IN ('NEW', 'PENDING')"
CLAIMABLE = "status = 'PENDING' AND queued_at IS NOT NULL"


def upgrade() -> None:
    now = sa.text("now()")
    op.create_table(
        "tasks",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("result", JSONB),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
        sa.Column("timeout_seconds", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("scheduled_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_hash", sa.Text),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("queued_at", sa.DateTime(timezone=True)),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("worker_id", sa.Text),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_tasks_status"),
        sa.CheckConstraint("priority BETWEEN 1 AND 3", name="ck_tasks_priority"),
        sa.CheckConstraint("max_attempts BETWEEN 1 AND 20", name="ck_tasks_max_attempts"),
        sa.CheckConstraint("timeout_seconds > 0", name="ck_tasks_timeout"),
        sa.UniqueConstraint("idempotency_key", name="uq_tasks_idempotency_key"),
    )
    # Newest-first listing, alone or under one equality filter; id breaks ties in the cursor.
    op.create_index("ix_tasks_created", "tasks", [sa.text("created_at DESC"), sa.text("id DESC")])
    for column in ("status", "priority", "kind"):
        op.create_index(
            f"ix_tasks_{column}_created",
            "tasks",
            [column, sa.text("created_at DESC"), sa.text("id DESC")],
        )
    # Claiming: the most urgent queued task, and the longest-waiting one for aging.
    op.create_index(
        "ix_tasks_claimable_priority",
        "tasks",
        [sa.text("priority DESC"), "available_at"],
        postgresql_where=sa.text(CLAIMABLE),
    )
    op.create_index(
        "ix_tasks_claimable_age", "tasks", ["available_at"], postgresql_where=sa.text(CLAIMABLE)
    )
    # The relay: queued tasks that the broker holds no message for yet.
    op.create_index(
        "ix_tasks_unqueued",
        "tasks",
        ["available_at"],
        postgresql_where=sa.text(f"queued_at IS NULL AND {QUEUED}"),
    )
    # Recovery: running tasks whose lease has run out.
    op.create_index(
        "ix_tasks_lease",
        "tasks",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'IN_PROGRESS'"),
    )


def downgrade() -> None:
    op.drop_table("tasks")
