"""Schedules: a cron expression in a time zone, and the task each due time creates.

A replica fires a due schedule by locking its row (SKIP LOCKED: others pass it by),
inserting one task per due time and moving next_run_at on, in one transaction; each
task's idempotency key names the schedule and the due time, so no due time ever makes
two. last_task_id has no foreign key: retention deletes old tasks, not their schedule.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("missed", sa.Text, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        # The task each due time creates: title, kind, payload, priority, queue, ...
        sa.Column("task", JSONB, nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True)),
        sa.Column("last_run_at", sa.DateTime(timezone=True)),
        sa.Column("last_task_id", UUID(as_uuid=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant", "name", name="uq_schedules_tenant_name"),
        sa.CheckConstraint("missed IN ('skip', 'run_once')", name="ck_schedules_missed"),
        # A paused schedule is due never; a running one always at some time.
        sa.CheckConstraint("paused = (next_run_at IS NULL)", name="ck_schedules_next_run"),
    )
    # The schedulers' one question: which schedules are due, soonest first.
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_run_at"],
        postgresql_where=sa.text("next_run_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("schedules")
