"""One exception class per problem type the API answers (RFC 9457 problem details): each
class names its problem type where it is declared (`problem="..."`)."""

from __future__ import annotations

from typing import Any, ClassVar

# A problem document's `type` is this and the problem's name.
PREFIX = "urn:conveyor:problem:"
_BY_NAME: dict[str, type[ProblemError]] = {}


class ConveyorError(Exception):
    """The root of every error this client raises."""


class Unreachable(ConveyorError):
    """The API could not be reached, or did not answer, after every retry."""


class ProblemError(ConveyorError):
    """The API answered with a problem: its status, type, detail and the fields in question."""

    # The name of the problem type this class stands for; None for a class of a status.
    problem: ClassVar[str | None] = None

    def __init_subclass__(cls, problem: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.problem = problem
        if problem is not None:
            _BY_NAME[problem] = cls

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


class ValidationFailed(BadRequest, problem="validation"):
    """422: a field is wrong; `errors` names each (`loc`, `msg`)."""


class TooLarge(BadRequest, problem="too-large"):
    """413, 431: a body, payload or headers over their limit."""


class Unauthenticated(ProblemError, problem="unauthenticated"):
    """401: no key, or a key that is malformed, unknown or revoked."""


class Forbidden(ProblemError, problem="forbidden"):
    """403: the key lacks the call's scope."""


class CrossSite(Forbidden, problem="cross-site"):
    """403: a change asked for by a page of another origin."""


class LoopbackOnly(Forbidden, problem="loopback-only"):
    """403: with API keys off, the API answers only at a loopback address or the host names
    it was told of."""


class NotFound(ProblemError):
    """404."""


class TaskNotFound(NotFound, problem="task-not-found"):
    pass


class AttemptNotFound(NotFound, problem="attempt-not-found"):
    pass


class ScheduleNotFound(NotFound, problem="schedule-not-found"):
    pass


class QueueNotFound(NotFound, problem="queue-not-found"):
    pass


class KeyNotFound(NotFound, problem="key-not-found"):
    pass


class KindNotFound(NotFound, problem="kind-not-found"):
    pass


class Conflict(ProblemError):
    """409."""


class TaskTerminal(Conflict, problem="task-terminal"):
    """The task is finished: it cannot be cancelled."""


class TaskNotRerunnable(Conflict, problem="task-not-rerunnable"):
    """Only a FAILED or CANCELLED task runs again."""


class IdempotencyKeyReused(Conflict, problem="idempotency-key-reused"):
    """The idempotency key was used with another body."""


class TooManyKeys(Conflict, problem="too-many-keys"):
    pass


class ScheduleNameTaken(Conflict, problem="schedule-name-taken"):
    pass


class TooManySchedules(Conflict, problem="too-many-schedules"):
    pass


class KindInUse(Conflict, problem="kind-in-use"):
    """A built-in kind, or one that live workers run: it cannot be forgotten."""


class RateLimited(ProblemError, problem="rate-limited"):
    """429: the key is over its rate limit; `retry_after` says when to try again."""


class UnsupportedMediaType(ProblemError, problem="unsupported-media-type"):
    """415: the body was not sent as application/json (the client always sends it so)."""


class Unavailable(ProblemError):
    """503: try again after `retry_after` seconds."""


class Overloaded(Unavailable, problem="overloaded"):
    pass


class TenantBusy(Unavailable, problem="tenant-busy"):
    pass


class AuthBusy(Unavailable, problem="auth-busy"):
    pass


class DatabaseUnavailable(Unavailable, problem="database-unavailable"):
    pass


class NotReady(Unavailable, problem="not-ready"):
    pass


class ServerError(ProblemError, problem="internal"):
    """500: a fault of the server."""


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
    kind = _BY_NAME.get(str(document.get("type", "")).removeprefix(PREFIX))
    kind = kind or _BY_STATUS.get(status)
    if kind is None:
        kind = ServerError if status >= 500 else ProblemError
    return kind(status, document, retry_after)


def problem_names() -> frozenset[str]:
    """The names of every problem type this client has a class for."""
    return frozenset(_BY_NAME)
