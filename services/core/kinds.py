"""Task kinds: the built-in ones and the user's, loaded from modules named in settings.

A kind is an async function that takes the task's payload (and, if it has a second
parameter, a TaskContext) and returns JSON. Mark one
with `@kind("name")` in any importable module and list that module in
CONVEYOR_TASK_MODULES; the API then accepts the kind and the worker runs it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

from services.core.domain import DEFAULT_QUEUE
from services.core.errors import TaskFailed
from services.core.outputs import clean_text

# An async function of the payload, or of the payload and a TaskContext.
Handler = Callable[..., Coroutine[Any, Any, Any]]
_MARK = "__conveyor_kind__"


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    handler: Handler
    # Per-attempt limit used when the task itself gives none; None means no limit.
    timeout_seconds: float | None = None
    # Where its tasks go unless their submission names a queue.
    queue: str = DEFAULT_QUEUE
    # The handler takes a second argument, the TaskContext.
    takes_context: bool = False


@dataclass(slots=True)
class TaskContext:
    """What a handler may take as its second argument: which task and attempt it runs
    (to make side effects idempotent by id and attempt), for whom, by when, a logger
    bound to the task, and a way to say how far it is."""

    id: uuid.UUID
    attempt: int
    tenant: str
    queue: str
    # When this attempt's time limit ends.
    deadline: datetime
    logger: logging.LoggerAdapter[logging.Logger]
    # The last progress reported and not yet stored; the worker stores it with its next
    # heartbeat, so reporting is cheap however often a handler calls it.
    reported: dict[str, Any] | None = None

    def progress(self, fraction: float, note: str = "") -> None:
        """Report how far the task is: `fraction` from 0 to 1, and a short note. Shown by
        GET /api/v1/tasks/{id} (`progress`) within a heartbeat."""
        if isinstance(fraction, bool) or not 0 <= fraction <= 1:
            raise ValueError(f"progress: fraction must be from 0 to 1, not {fraction!r}")
        note = clean_text(str(note)[:200])
        self.reported = {"fraction": float(fraction), "note": note}


def kind(
    name: str, *, timeout_seconds: float | None = None, queue: str = DEFAULT_QUEUE
) -> Callable[[Handler], Handler]:
    """Mark an async function as the handler of the kind `name`, whose tasks go to `queue`
    unless their submission names another."""

    def mark(handler: Handler) -> Handler:
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"kind {name!r}: {handler!r} must be an async function")
        takes_context = len(inspect.signature(handler).parameters) >= 2
        setattr(handler, _MARK, Kind(name, handler, timeout_seconds, queue, takes_context))
        return handler

    return mark


def check_queues(kinds: dict[str, Kind], queues: Iterable[str]) -> None:
    """Refuse to start with a kind whose queue is not defined, naming both."""
    known = set(queues)
    for found in kinds.values():
        if found.queue not in known:
            raise ValueError(
                f"kind {found.name!r} names queue {found.queue!r}, which CONVEYOR_QUEUES "
                f"does not define (defined: {', '.join(sorted(known))})"
            )


# The demo kinds sleep at most this long: a tenant cannot hold slots for hours with them.
MAX_DEMO_SECONDS = 600


def _seconds(payload: dict[str, Any], default: float | None) -> float:
    value = payload.get("seconds", default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_DEMO_SECONDS
    ):
        raise TaskFailed(
            f"payload.seconds must be a number from 0 to {MAX_DEMO_SECONDS}", retryable=False
        )
    return float(value)


@kind("demo")
async def demo(payload: dict[str, Any]) -> dict[str, Any]:
    """Simulated work: sleeps `seconds` (default 1)."""
    seconds = _seconds(payload, 1)
    await asyncio.sleep(seconds)
    return {"message": f"worked for {seconds:g} s", "slept": seconds}


@kind("noop")
async def noop(payload: dict[str, Any]) -> dict[str, Any]:
    """Returns at once; for benchmarks."""
    return {}


@kind("sleep")
async def sleep(payload: dict[str, Any]) -> dict[str, Any]:
    """Sleeps `seconds`."""
    seconds = _seconds(payload, None)
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@kind("echo")
async def echo(payload: dict[str, Any]) -> dict[str, Any]:
    """Returns the payload."""
    return payload


@kind("fail")
async def fail(payload: dict[str, Any]) -> None:
    """Raises; `retryable: false` stops the task without more attempts."""
    raise TaskFailed(
        str(payload.get("message", "failed on purpose")),
        retryable=payload.get("retryable", True) is not False,
    )


def kind_of(handler: object) -> Kind | None:
    """The kind `handler` was marked with by `@kind`, or None for any other object."""
    found = getattr(handler, _MARK, None)
    return found if isinstance(found, Kind) else None


def _kinds_in(module: ModuleType) -> Iterable[Kind]:
    for value in vars(module).values():
        found = kind_of(value)
        if found is not None:
            yield found


def load_kinds(modules: Iterable[str] = ()) -> dict[str, Kind]:
    """The built-in kinds plus those marked in `modules`; a name taken twice is an error."""
    registry: dict[str, Kind] = {}
    for module in [importlib.import_module(__name__), *map(importlib.import_module, modules)]:
        for found in _kinds_in(module):
            if found.name in registry and registry[found.name] != found:
                raise ValueError(f"kind {found.name!r} is defined twice")
            registry[found.name] = found
    return registry
