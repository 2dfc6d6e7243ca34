"""Finite times only, and claiming indexes led by tenant for the fair share.

Earlier versions could store `scheduled_at` (and so `available_at`) as PostgreSQL's
`infinity` or `-infinity`, which Python cannot read: such rows broke every read of the
task and the relay. They are brought into range here, and CHECK constraints keep them
finite from now on. The claim picks the tenant with the smallest share of running tasks
first, so the claimable indexes are led by tenant, and running tasks are counted per
tenant from an index of their own. The indexes are built concurrently, so tasks stay
writable meanwhile (see migrations/concurrently.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.migrations import concurrently

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CLAIMABLE = "status = 'PENDING' AND queued_at IS NOT NULL"
CLAIM_INDEXES = ("ix_tasks_claimable_priority", "ix_tasks_claimable_age")
# The latest time the API accepts: an `infinity` stored before becomes this.
LATEST = "'9999-12-30 23:59:59+00'"
FINITE = ("scheduled_at", "available_at")


def upgrade() -> None:
    # First, so that a retry after a failed build has nothing else to run again.
    with op.get_context().autocommit_block():
        _claim_indexes(["tenant"])
        concurrently.build(
            "ix_tasks_running_tenant",
            "tasks",
            ["tenant"],
            postgresql_where=sa.text("status = 'IN_PROGRESS'"),
        )
    for name in CLAIM_INDEXES:
        concurrently.take_name(name)
    for column in FINITE:
        op.execute(f"""
            UPDATE tasks SET {column} = CASE
                WHEN {column} = 'infinity' THEN timestamptz {LATEST} ELSE created_at END
            WHERE NOT isfinite({column})
        """)
        op.create_check_constraint(f"ck_tasks_{column}_finite", "tasks", f"isfinite({column})")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        concurrently.drop("ix_tasks_running_tenant", "tasks")
        _claim_indexes([])
    for name in CLAIM_INDEXES:
        concurrently.take_name(name)
    for column in FINITE:
        op.drop_constraint(f"ck_tasks_{column}_finite", "tasks", type_="check")


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
