"""Settings, read from the environment (prefix CONVEYOR_) once, in main() or a lifespan."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.core.domain import DEFAULT_QUEUE, QUEUE_NAME, Queue, Status
from services.core.outputs import OutputLimits


class QueueSettings(BaseModel):
    """One queue of CONVEYOR_QUEUES: its name, and the limits claims keep cluster-wide."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=QUEUE_NAME)
    # At most this many of its tasks running at once, across all workers.
    max_running: int | None = Field(None, ge=1)
    # At most this many of its tasks started a second, across all workers.
    rate: float | None = Field(None, gt=0, le=10_000)

    def to_queue(self) -> Queue:
        return Queue(self.name, self.max_running, self.rate)


class Settings(BaseSettings):
    """Every setting of every process; each process reads the ones it needs."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    # postgresql+asyncpg://...; a plain postgresql:// or postgres:// URL gets that driver.
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/conveyor",
        pattern=r"^postgresql\+asyncpg://",
    )
    database_pool_size: int = Field(10, ge=1)
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Names every exchange and queue, so that installations can share one vhost.
    amqp_prefix: str = Field("conveyor", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # Modules whose @kind functions a worker loads next to the built-in kinds
    # (comma-separated); it registers them, and the API takes them without importing them.
    task_modules: Annotated[list[str], NoDecode] = []
    # The API takes a kind no worker has registered, on the queue its submission names (else
    # default): its tasks wait there until a worker that runs it comes.
    accept_unregistered_kinds: bool = False
    # The queues, as JSON: [{"name": "default"}, {"name": "partner", "rate": 5}, ...]. Every
    # process of an installation reads the same list; "default" is always one of them.
    queues: list[QueueSettings] = [QueueSettings(name=DEFAULT_QUEUE)]

    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    # API processes on the one port (`conveyor api --processes N`), to use a pod's cores;
    # the relay, scheduler, recovery and retention run in the first of them only.
    api_processes: int = Field(1, ge=1, le=64)
    # The relay (which also fires due schedules) and the recovery sweep run in every API
    # process; switch them off to run `conveyor relay` and `conveyor recover` on their own
    # (or leave recovery to the operator).
    api_run_relay: bool = True
    # Publish each due task's message right after its INSERT commits, from the API process
    # itself; off, the relay (wherever it runs) sends every message.
    api_publish: bool = True
    api_run_recovery: bool = True
    # Retention (deleting old finished tasks) runs in every API process; one deletes at a time.
    api_run_retention: bool = True
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # All request headers together; more is refused with 431.
    max_header_bytes: int = Field(16_384, ge=1024)
    # Nesting of a task's payload (objects and lists inside each other).
    max_payload_depth: int = Field(32, ge=1, le=1000)

    # API keys (Authorization: Bearer). Off, every request acts for the tenant "default"
    # with every scope: for a laptop only.
    auth_enabled: bool = True
    # With keys off, the host names (comma-separated, no port) the API answers at besides
    # loopback addresses: its Service's and ingress's names in a cluster. Any other Host
    # gets 403, so a page whose name was made to point at the API cannot read it.
    allowed_hosts: Annotated[list[str], NoDecode] = []
    # A JSON file of keys to add at start-up (the chart mounts it from a Secret).
    auth_seed_file: str = ""
    # How long a key's lookup is reused: a revocation takes effect within this time.
    auth_cache_seconds: float = Field(5.0, ge=0)
    # Keys in use (not revoked) a tenant's admin may have made through the API.
    max_keys_per_tenant: int = Field(100, ge=1)
    # Key lookups in PostgreSQL per API process (keys not in the cache): past it, 503 with
    # Retry-After, so a flood of made-up keys cannot take the database pool.
    auth_lookup_limit: str = "200/second"
    # Requests per key across every API process (counted in PostgreSQL), as "100/second"
    # or "6000/minute"; a batch counts one per task; empty: no limit.
    rate_limit: str = "100/second"
    # Requests of one tenant handled at once by an API process; more wait in the tenant's
    # own line (503 + Retry-After past a short wait), so one tenant cannot take the pool:
    # keep it below database_pool_size, so that other tenants always find a connection.
    tenant_max_requests: int = Field(8, ge=1)
    # A request's headers and body must arrive within this time, or the connection closes.
    http_read_timeout_seconds: float = Field(10.0, gt=0)
    # Open connections per API process; past it new requests get 503 + Retry-After.
    http_max_connections: int = Field(1000, ge=1)
    # Requests waiting for a task to finish (GET ...?wait=) per API process; past it 503.
    wait_max_waiters: int = Field(1000, ge=1)
    # The per cent of those places one tenant's requests may hold (at least one); past it
    # that tenant gets 503 tenant-busy while other tenants still find places. With keys
    # off every request is the one tenant's, which then has every place.
    wait_tenant_percent: int = Field(25, ge=1, le=100)

    worker_concurrency: int = Field(16, ge=1, le=10_000)
    # The queues a worker takes tasks from (comma-separated); each must be in `queues`.
    worker_queues: Annotated[list[str], NoDecode] = [DEFAULT_QUEUE]
    # Where `conveyor worker` serves /metrics; 0 serves none.
    worker_metrics_port: int = Field(9464, ge=0, le=65535)
    worker_id: str = ""
    lease_seconds: float = Field(30.0, gt=0)
    heartbeat_seconds: float = Field(0.5, gt=0)
    retry_base_seconds: float = Field(1.0, ge=0)
    retry_max_seconds: float = Field(300.0, ge=0)
    aging_seconds: float = Field(60.0, gt=0)
    drain_seconds: float = Field(25.0, ge=0)
    # The per-attempt time limit of a task whose kind and submission set none.
    default_timeout_seconds: float = Field(3600.0, gt=0)
    # Running tasks of one tenant across all workers; 0: no cap (the fair share still holds).
    tenant_max_running: int = Field(0, ge=0)
    # What a handler's result may be as JSON (bytes of UTF-8, and nesting): a larger or
    # deeper one fails its attempt, for good. Its error text is cut to error_max_bytes.
    result_max_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    result_max_depth: int = Field(32, ge=1, le=200)
    error_max_bytes: int = Field(16_384, ge=256, le=1_048_576)
    # An attempt keeps the last lines its handler logged through its context's logger, up
    # to this many bytes of JSON.
    attempt_log_max_bytes: int = Field(65_536, ge=4096, le=16 * 1_048_576)

    recovery_interval_seconds: float = Field(1.0, gt=0)
    # Finished tasks are deleted this many days after they finished (0: kept for ever),
    # with their attempts; an idempotency key is free again once its task is gone.
    retention_completed_days: float = Field(7.0, ge=0)
    retention_failed_days: float = Field(30.0, ge=0)
    retention_cancelled_days: float = Field(30.0, ge=0)
    # How often a retention pass runs (in every API process that runs recovery; one at a
    # time deletes), and how many tasks one of its statements deletes.
    retention_interval_seconds: float = Field(60.0, gt=0)
    retention_batch: int = Field(1000, ge=1, le=100_000)
    # A schedule's due time at most this late still makes its task; older ones were
    # missed (the schedule says whether the latest of them runs once).
    # At least a second: a scheduler wakes a few milliseconds after a due time.
    schedule_grace_seconds: float = Field(60.0, ge=1)
    # Schedules a tenant may have.
    max_schedules_per_tenant: int = Field(100, ge=1)
    relay_interval_seconds: float = Field(1.0, gt=0)
    relay_batch: int = Field(500, ge=1, le=10_000)
    # A queued task its queue has no message for (queued tasks counted against messages)
    # gets a new one once it has been queued this long.
    lost_message_seconds: float = Field(30.0, gt=0)

    # The namespace the operator watches (its own, from the Downward API in the chart).
    operator_namespace: str = "default"
    # kopf peering name, so only one operator replica is active; empty runs standalone.
    operator_peering: str = "conveyor"
    operator_health_port: int = Field(8080, ge=1, le=65535)

    # The console's link to a task's trace: a URL with {trace_id}, such as
    # http://jaeger:16686/trace/{trace_id} or Grafana's Explore link for Tempo; empty: none.
    trace_url: str = Field("", pattern=r"^$|^https?://.*\{trace_id\}")

    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @field_validator("rate_limit", "auth_lookup_limit")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        if value:
            from limits import parse

            parse(value)  # ValueError names what it cannot read
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _asyncpg_driver(cls, value: object) -> object:
        # Any other driver is refused by the pattern: the images carry asyncpg alone.
        if isinstance(value, str):
            return re.sub(r"^postgres(ql)?://", "postgresql+asyncpg://", value)
        return value

    @field_validator("task_modules", "worker_queues", "allowed_hosts", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_queues(self) -> Settings:
        names = [queue.name for queue in self.queues]
        if len(set(names)) != len(names):
            raise ValueError(f"queues: a name is given twice in {names}")
        if DEFAULT_QUEUE not in names:
            raise ValueError(f"queues: {DEFAULT_QUEUE!r} must be one of them")
        unknown = sorted(set(self.worker_queues) - set(names))
        if unknown or not self.worker_queues:
            raise ValueError(f"worker_queues: {unknown or 'none'} not among queues {names}")
        return self

    def retention_days(self) -> dict[Status, float]:
        """Days each terminal status is kept; the statuses kept for ever are left out."""
        days = {
            Status.COMPLETED: self.retention_completed_days,
            Status.FAILED: self.retention_failed_days,
            Status.CANCELLED: self.retention_cancelled_days,
        }
        return {status: kept for status, kept in days.items() if kept > 0}

    def queue_map(self) -> dict[str, Queue]:
        """The queues by name."""
        return {queue.name: queue.to_queue() for queue in self.queues}

    def output_limits(self) -> OutputLimits:
        """The bounds on what a handler gives back."""
        return OutputLimits(
            self.result_max_bytes,
            self.result_max_depth,
            self.error_max_bytes,
            self.attempt_log_max_bytes,
        )
