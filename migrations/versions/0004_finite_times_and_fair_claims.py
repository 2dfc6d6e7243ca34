"""Finite times only, and claiming indexes led by tenant for the fair share.

Earlier versions could store `scheduled_at` (and so `available_at`) as PostgreSQL's
`infinity` or `-infinity`, which Python cannot read: such rows broke every read of the
task and the relay. They are brought into range here, and CHECK constraints keep them
finite from now on. The claim picks the tenant with the smallest share of running tasks
first, so the claimable indexes are led by tenant, and running tasks are counted per
tenant from an index of their own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CLAIMABLE = "status = 'PENDING' AND queued_at IS NOT NULL"
# The latest time the API accepts: an `infinity` stored before becomes this.
LATEST = "'9999-12-30 23:59:59+00'"
FINITE = ("scheduled_at", "available_at")


def upgrade() -> None:
    for column in FINITE:
        op.execute(f"""
            UPDATE tasks SET {column} = CASE
                WHEN {column} = 'infinity' THEN timestamptz {LATEST} ELSE created_at END
            WHERE NOT isfinite({column})
        """)
        op.create_check_constraint(f"ck_tasks_{column}_finite", "tasks", f"isfinite({column})")
    op.drop_index("ix_tasks_claimable_priority", "tasks")
    op.drop_index("ix_tasks_claimable_age", "tasks")
    _claim_indexes(["tenant"])
    op.create_index(
        "ix_tasks_running_tenant",
        "tasks",
        ["tenant"],
        postgresql_where=sa.text("status = 'IN_PROGRESS'"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_running_tenant", "tasks")
    op.drop_index("ix_tasks_claimable_priority", "tasks")
    op.drop_index("ix_tasks_claimable_age", "tasks")
    _claim_indexes([])
    for column in FINITE:
        op.drop_constraint(f"ck_tasks_{column}_finite", "tasks", type_="check")


def _claim_indexes(leading: list[str]) -> None:
    """The most urgent claimable task, and the longest-waiting one, led by `leading`."""
    op.create_index(
        "ix_tasks_claimable_priority",
        "tasks",
        [*leading, sa.text("priority DESC"), "available_at"],
        postgresql_where=sa.text(CLAIMABLE),
    )
    op.create_index(
        "ix_tasks_claimable_age",
        "tasks",
        [*leading, "available_at"],
        postgresql_where=sa.text(CLAIMABLE),
    )
