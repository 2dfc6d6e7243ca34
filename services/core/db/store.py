"""The PostgreSQL task store. Every status change is one guarded UPDATE, never read-then-write,
and is announced once on the store's `events` (services/core/events.py).

Each part lives beside its SQL, in a module named after who uses it: submissions (the API),
outbox (the relay), claims and attempts (workers), recovery (the sweep and the operator),
gauges (metrics and autoscaling), queues (their pause and backlog), retention, schedules,
activity (the console's overview), workers (the registry of worker processes).
"""

from __future__ import annotations

from services.core.db.activity import TenantActivity
from services.core.db.attempts import Attempts
from services.core.db.claims import Claims
from services.core.db.gauges import GaugeReads, Gauges
from services.core.db.kinds import KindRegistry
from services.core.db.outbox import Outbox
from services.core.db.queues import QueueStates
from services.core.db.recovery import Recovery
from services.core.db.retention import Retention
from services.core.db.schedules import Schedules
from services.core.db.submissions import InvalidCursor, Submissions, decode_cursor, encode_cursor
from services.core.db.workers import WorkerRegistry

__all__ = ["Gauges", "InvalidCursor", "SqlTaskStore", "decode_cursor", "encode_cursor"]


class SqlTaskStore(
    Submissions,
    Outbox,
    Claims,
    Attempts,
    Recovery,
    GaugeReads,
    QueueStates,
    Retention,
    Schedules,
    TenantActivity,
    WorkerRegistry,
    KindRegistry,
):
    """Tasks in PostgreSQL, for every process: each uses the part it needs."""
