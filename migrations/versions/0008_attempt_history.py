"""Every finished attempt of a task is kept: who ran it, when, and how it ended; a
running task has the progress its handler reports; and finished tasks can be found by
age, for retention.

Rows are written by the statement that ends the attempt (a result, a failure, a cancel,
a recovery), in the same transaction, and go with their task when it is deleted. A
FAILED or CANCELLED task can be run again with a fresh attempt budget, counted from
attempts_before_rerun. A task that reaches a terminal status is announced on the
channel conveyor_task_finished (NOTIFY, with its id), for requests that wait for it.
ix_tasks_finished holds each finished task once (its last version); it is built
concurrently, so tasks stay writable meanwhile (see migrations/concurrently.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from services.migrations import concurrently

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OUTCOMES = "'completed', 'failed', 'timed_out', 'cancelled', 'lost'"


def upgrade() -> None:
    # Repeatable, as a retry after a failed index build below runs it again.
    op.create_table(
        "task_attempts",
        sa.Column(
            "task_id",
            UUID(as_uuid=True),
            sa.ForeignKey("tasks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("worker_id", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(f"outcome IN ({OUTCOMES})", name="ck_task_attempts_outcome"),
        if_not_exists=True,
    )
    op.add_column("tasks", sa.Column("progress", JSONB), if_not_exists=True)
    # Attempts made before the task was last run again: its budget counts from there.
    op.add_column(
        "tasks",
        sa.Column("attempts_before_rerun", sa.Integer, nullable=False, server_default="0"),
        if_not_exists=True,
    )
    # Added without a scan under the write lock, then validated under a lighter one.
    op.execute("""
        DO $$ BEGIN
            ALTER TABLE tasks ADD CONSTRAINT ck_tasks_rerun_counted
                CHECK (attempts_before_rerun BETWEEN 0 AND attempts) NOT VALID;
        EXCEPTION WHEN duplicate_object THEN NULL;
        END $$
    """)
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_rerun_counted")
        concurrently.build(
            "ix_tasks_finished",
            "tasks",
            ["status", "finished_at"],
            postgresql_where=sa.text("status IN ('COMPLETED', 'FAILED', 'CANCELLED')"),
        )

    op.execute("""
        CREATE FUNCTION conveyor_task_finished() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('conveyor_task_finished', NEW.id::text);
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER tasks_finished AFTER UPDATE OF status ON tasks FOR EACH ROW
        WHEN (NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
              AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION conveyor_task_finished()
    """)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        concurrently.drop("ix_tasks_finished", "tasks")
    op.execute("DROP TRIGGER tasks_finished ON tasks")
    op.execute("DROP FUNCTION conveyor_task_finished()")
    op.drop_constraint("ck_tasks_rerun_counted", "tasks", type_="check")
    op.drop_column("tasks", "attempts_before_rerun")
    op.drop_column("tasks", "progress")
    op.drop_table("task_attempts")
