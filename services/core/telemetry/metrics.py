"""Every Prometheus metric of the service, named by Prometheus conventions.

Counters and histograms are per process; the `conveyor_queue_*`, `conveyor_outbox_*` and
`conveyor_workers` gauges describe the whole database and are the same on every API
replica: aggregate them with max(), not sum().

Each gauge says how an API pod of several processes (`conveyor api --processes N`, which
keeps prometheus_client's multiprocess files) answers it: the database-wide ones the
most recent value, whichever process read it; counters and histograms are summed.
"""

from __future__ import annotations

import platform

from prometheus_client import Counter, Gauge, Histogram

from services.core.events import TasksMoved
from services.core.version import VERSION

# Seconds, from a no-op to a long task.
_DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
)

BUILD_INFO = Gauge(
    "conveyor_build_info",
    "Always 1; the labels say which Conveyor and Python this process runs.",
    ["version", "python"],
    multiprocess_mode="max",
)
BUILD_INFO.labels(VERSION, platform.python_version()).set(1)

# A task's kind is the client's text: a label takes the first KIND_LABELS kinds a process
# sees, and "other" for any later one, so that made-up kinds cannot grow the series.
KIND_LABELS = 100
_kinds_seen: set[str] = set()


def kind_label(kind: str) -> str:
    """`kind` as a label value, from a bounded set."""
    if kind in _kinds_seen:
        return kind
    if len(_kinds_seen) >= KIND_LABELS:
        return "other"
    _kinds_seen.add(kind)
    return kind


TASKS_SUBMITTED = Counter(
    "conveyor_tasks_submitted_total", "Tasks accepted by the API.", ["priority", "kind"]
)
STATUS_CHANGES = Counter(
    "conveyor_task_status_changes_total", "Task status changes, by the status reached.", ["status"]
)
OUTCOMES = Counter(
    "conveyor_task_outcomes_total",
    "Attempts recorded by workers, by kind and the status they left the task in "
    "(PENDING: to be retried).",
    ["kind", "status"],
)
ATTEMPT_DURATION = Histogram(
    "conveyor_task_attempt_duration_seconds",
    "How long one attempt's handler ran.",
    ["kind", "queue"],
    buckets=_DURATION_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "conveyor_task_queue_wait_seconds",
    "From when a task was ready (submitted, scheduled time, end of backoff) to its start.",
    ["priority", "queue"],
    buckets=_DURATION_BUCKETS,
)
TASKS_IN_PROGRESS = Gauge(
    "conveyor_worker_tasks_in_progress",
    "Tasks this worker process runs now.",
    multiprocess_mode="livesum",
)
WORKER_SLOTS = Gauge(
    "conveyor_worker_slots",
    "Tasks this worker process may run at once.",
    multiprocess_mode="livesum",
)
HAND_BACKS = Counter(
    "conveyor_task_hand_backs_total",
    "Attempts a worker gave back to the queue uncounted: drain (it stopped) or no_handler "
    "(it does not run the task's kind; a task that keeps coming back here waits for a "
    "worker that does).",
    ["kind", "reason"],
)
RETRIES = Counter(
    "conveyor_task_retries_total", "Failed attempts that will be tried again.", ["kind"]
)
RECOVERIES = Counter(
    "conveyor_task_recoveries_total", "Tasks taken back from a lost holder.", ["reason", "status"]
)
TASKS_DELETED = Counter(
    "conveyor_tasks_deleted_total",
    "Finished tasks deleted by retention, by status.",
    ["status"],
)
SCHEDULE_TASKS = Counter("conveyor_schedule_tasks_total", "Tasks made by schedules' due times.")
SCHEDULE_MISSED = Counter(
    "conveyor_schedule_missed_total",
    "Due times of schedules that made no task: passed, while no scheduler ran, by more "
    "than SCHEDULE_GRACE_SECONDS (the latest of them runs once where the schedule asks).",
)
QUEUE_STARTED = Counter("conveyor_queue_started_total", "Attempts started, by queue.", ["queue"])
QUEUE_HELD_BACK = Counter(
    "conveyor_queue_held_back_total",
    "Claims that a queue's pause, max_running or rate made wait, by queue.",
    ["queue"],
)
MESSAGES_RESENT = Counter(
    "conveyor_relay_messages_resent_total",
    "Queued tasks whose broker message was gone and was sent again.",
)
OUTBOX_BACKLOG = Gauge(
    "conveyor_outbox_backlog_tasks",
    "Tasks still NEW: committed, not yet confirmed by the broker.",
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "conveyor_outbox_oldest_age_seconds",
    "Age of the oldest task still NEW.",
    multiprocess_mode="mostrecent",
)
LEASE_EXPIRED = Gauge(
    "conveyor_tasks_lease_expired",
    "Running tasks whose lease ran out and that recovery has not handed back yet.",
    multiprocess_mode="mostrecent",
)
QUEUE_DEPTH = Gauge(
    "conveyor_queue_depth_tasks",
    "Tasks to run now: ready (NEW or PENDING and due) or running (IN_PROGRESS).",
    ["priority", "state"],
    multiprocess_mode="mostrecent",
)
GAUGES_UP = Gauge(
    "conveyor_database_gauges_up",
    "1 when the last scrape read the database-wide gauges; 0 when PostgreSQL could not be "
    "read, and the conveyor_queue_*, conveyor_outbox_* and lease gauges hold old values.",
    multiprocess_mode="mostrecent",
)
GAUGES_REFRESHED = Gauge(
    "conveyor_gauges_refreshed_timestamp_seconds",
    "When (Unix time) this process last read the database-wide gauges; 0 before its first "
    "read. The alerts on those gauges ignore a process whose read is old.",
    multiprocess_mode="mostrecent",
)
QUEUE_TASKS = Gauge(
    "conveyor_queue_tasks",
    "A queue's tasks: queued (NEW or PENDING, due or not) or running (IN_PROGRESS).",
    ["queue", "state"],
    multiprocess_mode="mostrecent",
)
QUEUE_OLDEST_READY = Gauge(
    "conveyor_queue_oldest_ready_seconds",
    "How long the longest-waiting due task of a queue and priority has waited (0 when none waits).",
    ["queue", "priority"],
    multiprocess_mode="mostrecent",
)
QUEUE_PAUSED = Gauge(
    "conveyor_queue_paused", "1 while a queue is paused.", ["queue"], multiprocess_mode="mostrecent"
)
WORKERS = Gauge(
    "conveyor_workers",
    "Worker processes seen within their lease, by a queue they consume and state (alive or "
    "draining); a worker on two queues counts on both.",
    ["queue", "state"],
    multiprocess_mode="mostrecent",
)
QUEUE_WORKER_SLOTS = Gauge(
    "conveyor_queue_worker_slots",
    "Slots (tasks at once) of the alive workers that consume a queue.",
    ["queue"],
    multiprocess_mode="mostrecent",
)
HTTP_REQUESTS = Counter(
    "conveyor_http_requests_total", "HTTP requests answered.", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "conveyor_http_request_duration_seconds",
    "HTTP request latency.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
AUTH_REFUSALS = Counter(
    "conveyor_http_auth_refusals_total",
    "Requests refused by authentication, scope or rate limit; never labelled by tenant or key.",
    ["reason"],
)
# Every reason from zero, so that rate() sees the first refusal of each.
for _reason in (
    "missing",
    "invalid",
    "revoked",
    "forbidden",
    "rate_limited",
    "lookup_limited",
    "tenant_busy",
):
    AUTH_REFUSALS.labels(_reason)
LOOP_FAILING = Gauge(
    "conveyor_loop_failing",
    "1 while a background loop's last three passes all failed with an unexpected error; "
    "0 once a pass works again.",
    ["loop"],
    multiprocess_mode="livemax",
)
BACKGROUND_ERRORS = Counter(
    "conveyor_background_errors_total",
    "Unexpected errors in a pass of a background loop; the loop backs off and goes on.",
    ["loop"],
)
for _loop in (
    "relay",
    "schedules",
    "recovery",
    "retention",
    "listen",
    "gauges",
    "heartbeat",
    "consume",
):
    BACKGROUND_ERRORS.labels(_loop)


def count_moves(moved: TasksMoved) -> None:
    """A subscriber to a store's status changes: each counted by the status reached."""
    STATUS_CHANGES.labels(moved.to).inc(moved.count)
