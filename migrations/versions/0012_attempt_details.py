"""What a failed attempt leaves to debug it: its exception, and its handler's log lines.

task_attempts gains `error_type` (the class of the exception that failed the attempt,
TimeoutError for a time-out) and `traceback` (cut to ERROR_MAX_BYTES, its end kept);
both are null for an attempt that ended without one. Nullable columns without a default:
no rewrite, and the previous version's statements, which name their columns, go on.

attempt_logs holds, for each attempt, the last lines its handler logged through its
context's logger (a JSON array of {logged_at, level, message}, at most
ATTEMPT_LOG_MAX_BYTES of them) and how many it logged in all. The worker keeps them and
writes them in the statement that ends the attempt, and, for a long run, in its lease
renewal every few seconds: no statement of their own. They go with their task (ON DELETE
CASCADE), so retention deletes them too.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("task_attempts", sa.Column("error_type", sa.Text), if_not_exists=True)
    op.add_column("task_attempts", sa.Column("traceback", sa.Text), if_not_exists=True)
    op.create_table(
        "attempt_logs",
        sa.Column(
            "task_id",
            UUID(as_uuid=True),
            sa.ForeignKey("tasks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("lines", JSONB, nullable=False),
        sa.Column("logged", sa.Integer, nullable=False),
        sa.CheckConstraint(
            "jsonb_typeof(lines) = 'array' AND logged >= 0", name="ck_attempt_logs_lines"
        ),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("attempt_logs")
    op.drop_column("task_attempts", "traceback")
    op.drop_column("task_attempts", "error_type")
