"""Every Prometheus metric of the service, named by Prometheus conventions.

Counters and histograms are per process; the `conveyor_queue_*` and `conveyor_outbox_*`
gauges describe the whole database and are the same on every API replica: aggregate
them with max(), not sum().
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

TASKS_SUBMITTED = Counter(
    "conveyor_tasks_submitted_total", "Tasks accepted by the API.", ["priority", "kind"]
)
STATUS_CHANGES = Counter(
    "conveyor_task_status_changes_total", "Task status changes, by the status reached.", ["status"]
)
ATTEMPT_DURATION = Histogram(
    "conveyor_task_attempt_duration_seconds",
    "How long one attempt's handler ran.",
    ["kind"],
    buckets=_DURATION_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "conveyor_task_queue_wait_seconds",
    "From when a task was ready (submitted, scheduled time, end of backoff) to its start.",
    ["priority"],
    buckets=_DURATION_BUCKETS,
)
TASKS_IN_PROGRESS = Gauge(
    "conveyor_worker_tasks_in_progress", "Tasks this worker process runs now."
)
WORKER_SLOTS = Gauge("conveyor_worker_slots", "Tasks this worker process may run at once.")
RETRIES = Counter(
    "conveyor_task_retries_total", "Failed attempts that will be tried again.", ["kind"]
)
RECOVERIES = Counter(
    "conveyor_task_recoveries_total", "Tasks taken back from a lost holder.", ["reason", "status"]
)
MESSAGES_RESENT = Counter(
    "conveyor_relay_messages_resent_total",
    "Queued tasks whose broker message was gone and was sent again.",
)
OUTBOX_BACKLOG = Gauge(
    "conveyor_outbox_backlog_tasks", "Tasks still NEW: committed, not yet confirmed by the broker."
)
OUTBOX_OLDEST_AGE = Gauge("conveyor_outbox_oldest_age_seconds", "Age of the oldest task still NEW.")
LEASE_EXPIRED = Gauge(
    "conveyor_tasks_lease_expired",
    "Running tasks whose lease ran out and that recovery has not handed back yet.",
)
QUEUE_DEPTH = Gauge(
    "conveyor_queue_depth_tasks",
    "Tasks to run now: ready (NEW or PENDING and due) or running (IN_PROGRESS).",
    ["priority", "state"],
)
QUEUE_OLDEST_AGE = Gauge(
    "conveyor_queue_oldest_age_seconds", "How long the oldest ready task has waited.", ["priority"]
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
BACKGROUND_ERRORS = Counter(
    "conveyor_background_errors_total",
    "Unexpected errors in a pass of a background loop; the loop backs off and goes on.",
    ["loop"],
)
for _loop in ("relay", "recovery", "gauges", "heartbeat", "consume"):
    BACKGROUND_ERRORS.labels(_loop)
