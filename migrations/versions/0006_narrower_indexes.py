"""Fewer index entries per status change: every change of a task's status writes a new
version of its row, and that version an entry in every index whose condition it meets.

- A unique index of only the tasks that have an idempotency key (most have none), which
  the service's inserts name from now on. The full unique constraint stays for this
  release, for the API pods of the previous version during the rollout; dropping it in a
  later schema spares every keyless task an entry at each of its status changes.
- The newest-first listing by priority is gone: a priority matches a third of the tasks
  or more, so the newest page filtered by it reads the plain newest-first index (or the
  status one, when a status is asked for too) and keeps one row in three.

Upgrading builds the partial unique index concurrently (a few seconds per million rows),
so tasks stay writable meanwhile (see migrations/concurrently.py); no task changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.migrations import concurrently

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEYS = "uq_tasks_tenant_idempotency_key"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # Beside the full unique constraint, which API pods of the previous version still
        # name in their ON CONFLICT while the rollout replaces them; a later schema drops it.
        concurrently.build(
            f"{KEYS}_partial",
            "tasks",
            ["tenant", "idempotency_key"],
            unique=True,
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )
        concurrently.drop("ix_tasks_priority_created", "tasks")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        concurrently.build(
            "ix_tasks_priority_created",
            "tasks",
            ["tenant", "priority", sa.text("created_at DESC"), sa.text("id DESC")],
        )
        concurrently.drop(f"{KEYS}_partial", "tasks")
