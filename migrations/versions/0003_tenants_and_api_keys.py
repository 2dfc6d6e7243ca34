"""Tenants own tasks; API keys name a tenant and its scopes.

Existing tasks go to the tenant "default". Listing indexes and idempotency keys become
per tenant, so one tenant's keys and listings never meet another's. Their indexes are
built concurrently, so tasks stay writable meanwhile (see migrations/concurrently.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from services.migrations import concurrently

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LISTED_BY = ("status", "priority", "kind")
SCOPES = "'submit', 'read', 'cancel', 'admin'"
LIVE = "'NEW', 'PENDING', 'IN_PROGRESS'"
KEYS = "uq_tasks_idempotency_key"
TENANT_KEYS = "uq_tasks_tenant_idempotency_key"


def upgrade() -> None:
    # Existing rows join "default". The server default stays: this release always names
    # the tenant, and a worker or relay of the previous release never inserts. (Its API
    # cannot submit once the idempotency constraint below has changed: see the README's
    # upgrade notes.) Repeatable, as a retry after a failed index build below runs it again.
    op.add_column(
        "tasks",
        sa.Column("tenant", sa.Text, nullable=False, server_default="default"),
        if_not_exists=True,
    )
    with op.get_context().autocommit_block():
        # Unique while the global key constraint still holds, which it then replaces.
        concurrently.build(TENANT_KEYS, "tasks", ["tenant", "idempotency_key"], unique=True)
        _listing_indexes(["tenant"])
        # What the tenant-led indexes no longer serve: queries of the whole queue by status
        # (KEDA's count, the metrics gauges, the relay's safety net). Live tasks only.
        concurrently.build(
            "ix_tasks_live",
            "tasks",
            ["status", "available_at"],
            postgresql_where=sa.text(f"status IN ({LIVE})"),
        )
    _take_listing_names()
    op.drop_constraint("uq_tasks_idempotency_key", "tasks", type_="unique")
    op.execute(f"ALTER TABLE tasks ADD CONSTRAINT {TENANT_KEYS} UNIQUE USING INDEX {TENANT_KEYS}")
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("scopes", ARRAY(sa.Text), nullable=False),
        sa.Column("secret_digest", sa.Text, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            f"scopes <@ ARRAY[{SCOPES}] AND cardinality(scopes) > 0", name="ck_api_keys_scopes"
        ),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant", "created_at"])


def downgrade() -> None:
    with op.get_context().autocommit_block():
        concurrently.drop("ix_tasks_live", "tasks")
        _listing_indexes([])
    op.drop_constraint(TENANT_KEYS, "tasks", type_="unique", if_exists=True)
    # Tenants may share a key; without tenants, the oldest task keeps it.
    op.execute("""
        UPDATE tasks AS later SET idempotency_key = NULL
        WHERE EXISTS (SELECT 1 FROM tasks AS first
                      WHERE first.idempotency_key = later.idempotency_key
                        AND (first.created_at, first.id) < (later.created_at, later.id))
    """)
    with op.get_context().autocommit_block():
        concurrently.build(KEYS, "tasks", ["idempotency_key"], unique=True)
    _take_listing_names()
    op.execute(f"ALTER TABLE tasks ADD CONSTRAINT {KEYS} UNIQUE USING INDEX {KEYS}")
    op.drop_table("api_keys")
    op.drop_column("tasks", "tenant")


def _listing_indexes(leading: list[str]) -> None:
    """The newest-first listing indexes, led by `leading` columns: built beside the ones
    there, which they replace (in the autocommit block)."""
    newest = [sa.text("created_at DESC"), sa.text("id DESC")]
    concurrently.rebuild("ix_tasks_created", "tasks", [*leading, *newest])
    for column in LISTED_BY:
        concurrently.rebuild(f"ix_tasks_{column}_created", "tasks", [*leading, column, *newest])


def _take_listing_names() -> None:
    """The listing indexes _listing_indexes() built take their names (after the block)."""
    for name in ("ix_tasks_created", *(f"ix_tasks_{column}_created" for column in LISTED_BY)):
        concurrently.take_name(name)
