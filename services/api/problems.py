"""Every problem type the API answers, named once: a refusal's problem document says
which in its `type`, urn:conveyor:problem:<name>, and clients tell refusals apart by it."""

from __future__ import annotations

import enum

PREFIX = "urn:conveyor:problem:"


class ProblemType(enum.StrEnum):
    """The names of the API's problems; plain HTTP ones (404 of an unknown path, 405)
    have none and are typed about:blank."""

    VALIDATION = "validation"
    TOO_LARGE = "too-large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    CROSS_SITE = "cross-site"
    LOOPBACK_ONLY = "loopback-only"
    TASK_NOT_FOUND = "task-not-found"
    ATTEMPT_NOT_FOUND = "attempt-not-found"
    SCHEDULE_NOT_FOUND = "schedule-not-found"
    QUEUE_NOT_FOUND = "queue-not-found"
    KEY_NOT_FOUND = "key-not-found"
    KIND_NOT_FOUND = "kind-not-found"
    TASK_TERMINAL = "task-terminal"
    TASK_NOT_RERUNNABLE = "task-not-rerunnable"
    IDEMPOTENCY_KEY_REUSED = "idempotency-key-reused"
    TOO_MANY_KEYS = "too-many-keys"
    SCHEDULE_NAME_TAKEN = "schedule-name-taken"
    TOO_MANY_SCHEDULES = "too-many-schedules"
    KIND_IN_USE = "kind-in-use"
    RATE_LIMITED = "rate-limited"
    OVERLOADED = "overloaded"
    TENANT_BUSY = "tenant-busy"
    AUTH_BUSY = "auth-busy"
    DATABASE_UNAVAILABLE = "database-unavailable"
    NOT_READY = "not-ready"
    INTERNAL = "internal"

    @property
    def uri(self) -> str:
        """The `type` of a problem document of this name."""
        return PREFIX + self.value
