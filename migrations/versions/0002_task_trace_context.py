"""Keep each task's W3C trace context, so every hop of the task joins one trace.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("trace_context", JSONB))


def downgrade() -> None:
    op.drop_column("tasks", "trace_context")
