"""Task kinds: the built-in ones and the user's, loaded by workers from modules named in
settings.

A kind is an async function that takes the task's payload (and, if it has a second
parameter, a TaskContext) and returns JSON. Mark one with `@kind("name")` in any
importable module and list that module in the worker's CONVEYOR_TASK_MODULES: the worker
registers the kind (its queue, time limit and payload schema, as a `KindCard`) in
PostgreSQL, and the API accepts it from then on without importing the module.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import json
import logging
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

from pydantic import BaseModel

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
    # The model its payload must fit: the handler then gets an instance of it, and the
    # API refuses a payload that does not fit its JSON Schema.
    payload: type[BaseModel] | None = None

    def card(self) -> KindCard:
        """What a worker registers of this kind."""
        schema = self.payload.model_json_schema() if self.payload is not None else None
        doc = inspect.getdoc(self.handler) or ""
        return KindCard.of(
            self.name, self.queue, self.timeout_seconds, doc.split("\n\n")[0], schema
        )


@dataclass(frozen=True, slots=True)
class KindCard:
    """A version of a kind as workers register it and the API reads it: no code."""

    name: str
    queue: str
    timeout_seconds: float | None
    # The first paragraph of the handler's docstring.
    description: str
    # JSON Schema of the payload; None: any JSON object.
    payload_schema: dict[str, Any] | None
    # Names this version: a hash of all the above.
    digest: str

    @classmethod
    def of(
        cls,
        name: str,
        queue: str,
        timeout_seconds: float | None,
        description: str,
        payload_schema: dict[str, Any] | None,
    ) -> KindCard:
        fields = [name, queue, timeout_seconds, description, payload_schema]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
        return cls(name, queue, timeout_seconds, description, payload_schema, digest)


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
    name: str,
    *,
    timeout_seconds: float | None = None,
    queue: str = DEFAULT_QUEUE,
    payload: type[BaseModel] | None = None,
) -> Callable[[Handler], Handler]:
    """Mark an async function as the handler of the kind `name`, whose tasks go to `queue`
    unless their submission names another. With `payload`, a pydantic model, the handler
    gets the payload as an instance of it, and the API refuses a payload that does not fit."""
    if payload is not None and not (isinstance(payload, type) and issubclass(payload, BaseModel)):
        raise TypeError(f"kind {name!r}: payload must be a pydantic model class, not {payload!r}")

    def mark(handler: Handler) -> Handler:
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"kind {name!r}: {handler!r} must be an async function")
        takes_context = len(inspect.signature(handler).parameters) >= 2
        found = Kind(name, handler, timeout_seconds, queue, takes_context, payload)
        setattr(handler, _MARK, found)
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


def builtin_kinds() -> dict[str, Kind]:
    """The kinds every worker runs: the API knows them without a registration."""
    return load_kinds()


def load_kinds(modules: Iterable[str] = ()) -> dict[str, Kind]:
    """The built-in kinds plus those marked in `modules`; a name taken twice is an error."""
    registry: dict[str, Kind] = {}
    for module in [importlib.import_module(__name__), *map(importlib.import_module, modules)]:
        for found in _kinds_in(module):
            if found.name in registry and registry[found.name] != found:
                raise ValueError(f"kind {found.name!r} is defined twice")
            registry[found.name] = found
    return registry
