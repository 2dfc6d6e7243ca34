"""Every error the service raises on purpose, under one root."""

from __future__ import annotations

import uuid


class ConveyorError(Exception):
    """The root of the service's own errors."""


class TaskNotFound(ConveyorError):
    def __init__(self, task_id: uuid.UUID) -> None:
        super().__init__(f"task {task_id} does not exist")
        self.task_id = task_id


class AttemptNotFound(ConveyorError):
    """The task exists, but has not started that attempt."""

    def __init__(self, task_id: uuid.UUID, attempt: int) -> None:
        super().__init__(f"task {task_id} has no attempt {attempt}")
        self.task_id = task_id
        self.attempt = attempt


class TaskAlreadyTerminal(ConveyorError):
    def __init__(self, task_id: uuid.UUID, status: str) -> None:
        super().__init__(f"task {task_id} is already {status}")
        self.task_id = task_id
        self.status = status


class TaskNotRerunnable(ConveyorError):
    """Only a FAILED or CANCELLED task can be run again."""

    def __init__(self, task_id: uuid.UUID, status: str) -> None:
        super().__init__(f"task {task_id} is {status}: only FAILED or CANCELLED tasks run again")
        self.task_id = task_id
        self.status = status


class IdempotencyConflict(ConveyorError):
    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was used with a different body")
        self.key = key


class StoreUnavailable(ConveyorError):
    """PostgreSQL cannot be reached; callers should try again later."""


class StoreBusy(StoreUnavailable):
    """Every connection of this process's pool stayed in use: overload, not an outage of
    PostgreSQL, but the caller's answer is the same (503, try again shortly)."""


class TaskFailed(ConveyorError):
    """Raised by a handler: the attempt failed.

    `retryable=False` stops the task at once; otherwise it is tried again with backoff
    until its attempts are used up.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class KeyNotFound(ConveyorError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id} does not exist")
        self.key_id = key_id


class TooManyKeys(ConveyorError):
    def __init__(self, tenant: str, limit: int) -> None:
        super().__init__(
            f"tenant {tenant} has {limit} keys in use, the most it may have; revoke one first"
        )
        self.tenant = tenant


class ScheduleNotFound(ConveyorError):
    def __init__(self, schedule_id: uuid.UUID) -> None:
        super().__init__(f"schedule {schedule_id} does not exist")
        self.schedule_id = schedule_id


class ScheduleNameTaken(ConveyorError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a schedule named {name!r} exists already; delete it first")
        self.name = name


class TooManySchedules(ConveyorError):
    def __init__(self, tenant: str, limit: int) -> None:
        super().__init__(f"tenant {tenant} has {limit} schedules, the most it may have")
        self.tenant = tenant
