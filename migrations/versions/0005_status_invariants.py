"""The invariants of a task's status, held by PostgreSQL itself.

Every write of the store keeps them already; these CHECK constraints make a write that
would not (a bug, a hand-made UPDATE) fail instead of leaving a task no process can move:
`finished_at` is set exactly when the task is terminal, a lease exactly while it runs, and
attempts are never negative (the status itself is checked since 0001). Existing rows are
validated: an upgrade over rows that break one stops here and names the constraint.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TERMINAL = "status IN ('COMPLETED', 'FAILED', 'CANCELLED')"
CHECKS = {
    "ck_tasks_finished_when_terminal": f"(finished_at IS NOT NULL) = ({TERMINAL})",
    "ck_tasks_lease_when_running": "(lease_expires_at IS NOT NULL) = (status = 'IN_PROGRESS')",
    "ck_tasks_attempts_counted": "attempts >= 0",
}


def upgrade() -> None:
    for name, condition in CHECKS.items():
        # Added without a scan under the write lock, then validated under a lighter one.
        op.execute(f"ALTER TABLE tasks ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
        op.execute(f"ALTER TABLE tasks VALIDATE CONSTRAINT {name}")


def downgrade() -> None:
    for name in reversed(list(CHECKS)):
        op.drop_constraint(name, "tasks", type_="check")
