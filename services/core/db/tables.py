"""The tables, for building statements. Alembic migrations alone create them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = sa.MetaData()

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    # Who submitted it: every client read and write is scoped to one tenant.
    sa.Column("tenant", sa.Text, nullable=False),
    # Which workers take it, under which limits (settings name the queues).
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("result", JSONB(none_as_null=True)),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("timeout_seconds", sa.Float),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("scheduled_at", sa.DateTime(timezone=True)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("request_hash", sa.Text),
    # When the task may next be claimed: creation, scheduled_at, or the end of a backoff.
    sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
    # When the broker confirmed a message for the current wait; NULL: the relay owes one.
    sa.Column("queued_at", sa.DateTime(timezone=True)),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("worker_id", sa.Text),
    # The W3C trace context of the request that submitted the task (traceparent, ...).
    sa.Column("trace_context", JSONB),
    # What its handler last reported: {"fraction": 0.0-1.0, "note": "..."}.
    sa.Column("progress", JSONB),
    sa.Column("attempts_before_rerun", sa.Integer, nullable=False),
)

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("next_start", sa.DateTime(timezone=True), nullable=False),
)

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("cron", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("missed", sa.Text, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    # The task each due time creates, as JSON (services/core/db/schedules.py reads it).
    sa.Column("task", JSONB, nullable=False),
    # NULL while paused.
    sa.Column("next_run_at", sa.DateTime(timezone=True)),
    sa.Column("last_run_at", sa.DateTime(timezone=True)),
    sa.Column("last_task_id", UUID(as_uuid=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("scopes", ARRAY(sa.Text), nullable=False),
    # SHA-256 of the key's secret, hex: the secret itself is never stored.
    sa.Column("secret_digest", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)
