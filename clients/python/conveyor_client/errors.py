"""One exception class per problem type the API answers (RFC 9457 problem details)."""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """The root of every error this client raises."""


class Unreachable(ConveyorError):
    """The API could not be reached, or did not answer, after every retry."""


class ProblemError(ConveyorError):
    """The API answered with a problem: its status, type, detail and the fields in question."""

    def __init__(self, status: int, body: dict[str, Any], retry_after: float | None = None):
        self.status = status
        self.type = str(body.get("type", "about:blank"))
        self.title = str(body.get("title", ""))
        self.detail = str(body.get("detail", "")) or self.title or f"HTTP {status}"
        self.errors: list[dict[str, Any]] = list(body.get("errors") or [])
        self.retry_after = retry_after
        super().__init__(self.detail)


class BadRequest(ProblemError):
    """400: the body is not JSON the API can read."""


class ValidationFailed(BadRequest):
    """422: a field is wrong; `errors` names each (`loc`, `msg`)."""


class TooLarge(BadRequest):
    """413, 431: a body, payload or headers over their limit."""


class Unauthenticated(ProblemError):
    """401: no key, or a key that is malformed, unknown or revoked."""


class Forbidden(ProblemError):
    """403: the key lacks the call's scope."""


class CrossSite(Forbidden):
    """403: a change asked for by a page of another origin."""


class NotFound(ProblemError):
    """404."""


class TaskNotFound(NotFound):
    pass


class ScheduleNotFound(NotFound):
    pass


class QueueNotFound(NotFound):
    pass


class KeyNotFound(NotFound):
    pass


class Conflict(ProblemError):
    """409."""


class TaskTerminal(Conflict):
    """The task is finished: it cannot be cancelled."""


class TaskNotRerunnable(Conflict):
    """Only a FAILED or CANCELLED task runs again."""


class IdempotencyKeyReused(Conflict):
    """The idempotency key was used with another body."""


class TooManyKeys(Conflict):
    pass


class ScheduleNameTaken(Conflict):
    pass


class TooManySchedules(Conflict):
    pass


class RateLimited(ProblemError):
    """429: the key is over its rate limit; `retry_after` says when to try again."""


class Unavailable(ProblemError):
    """503: try again after `retry_after` seconds."""


class Overloaded(Unavailable):
    pass


class TenantBusy(Unavailable):
    pass


class AuthBusy(Unavailable):
    pass


class DatabaseUnavailable(Unavailable):
    pass


class NotReady(Unavailable):
    pass


class ServerError(ProblemError):
    """500: a fault of the server."""


_BY_TYPE: dict[str, type[ProblemError]] = {
    "validation": ValidationFailed,
    "too-large": TooLarge,
    "unauthenticated": Unauthenticated,
    "forbidden": Forbidden,
    "cross-site": CrossSite,
    "task-not-found": TaskNotFound,
    "schedule-not-found": ScheduleNotFound,
    "queue-not-found": QueueNotFound,
    "key-not-found": KeyNotFound,
    "task-terminal": TaskTerminal,
    "task-not-rerunnable": TaskNotRerunnable,
    "idempotency-key-reused": IdempotencyKeyReused,
    "too-many-keys": TooManyKeys,
    "schedule-name-taken": ScheduleNameTaken,
    "too-many-schedules": TooManySchedules,
    "rate-limited": RateLimited,
    "overloaded": Overloaded,
    "tenant-busy": TenantBusy,
    "auth-busy": AuthBusy,
    "database-unavailable": DatabaseUnavailable,
    "not-ready": NotReady,
    "internal": ServerError,
}
_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: ValidationFailed,
    429: RateLimited,
    431: TooLarge,
    503: Unavailable,
}


def problem_of(status: int, body: Any, retry_after: float | None = None) -> ProblemError:
    """The exception for an answer of `status` with the problem document `body`."""
    document = body if isinstance(body, dict) else {}
    slug = str(document.get("type", "")).rpartition(":")[2]
    kind = _BY_TYPE.get(slug) or _BY_STATUS.get(status)
    if kind is None:
        kind = ServerError if status >= 500 else ProblemError
    return kind(status, document, retry_after)
