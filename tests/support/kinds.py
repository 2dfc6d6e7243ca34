"""A user kinds module, loaded through CONVEYOR_TASK_MODULES like any user's."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from services.core.kinds import TaskContext, kind

runs: Counter[str] = Counter()


@kind("count")
async def count(payload: dict[str, Any]) -> dict[str, int]:
    """Counts its runs per payload key, so tests can tell how often a handler ran."""
    runs[payload["key"]] += 1
    return {"runs": runs[payload["key"]]}


attempt_times: dict[str, list[float]] = {}


@kind("flaky")
async def flaky(payload: dict[str, Any]) -> dict[str, int]:
    """Fails `failures` times (retryably), then succeeds; records when each attempt ran."""
    import time

    from services.core.errors import TaskFailed

    times = attempt_times.setdefault(payload["key"], [])
    times.append(time.monotonic())
    if len(times) <= payload["failures"]:
        raise TaskFailed(f"failure {len(times)}")
    return {"attempts_seen": len(times)}


@kind("slow_by_default", timeout_seconds=0.2)
async def slow_by_default(payload: dict[str, Any]) -> None:
    """Sleeps past its kind's own time limit."""
    import asyncio

    await asyncio.sleep(5)


@kind("unstorable")
async def unstorable(payload: dict[str, Any]) -> Any:
    """Returns, or fails with, what PostgreSQL cannot keep: NaN, a NUL, a lone surrogate."""
    from services.core.errors import TaskFailed

    if payload["what"] == "nan":
        return {"x": float("nan")}
    if payload["what"] == "nul":
        return {"x": "a\x00b"}
    if payload["what"] == "surrogate":
        return {"x": "\udc80"}
    if payload["what"] == "surrogate-error":
        raise TaskFailed("bad\ud800byte", retryable=False)
    raise TaskFailed("bad\x00byte", retryable=False)


@kind("finishing")
async def finishing(payload: dict[str, Any], context: TaskContext) -> None:
    """Says it is done and returns at once, long before any heartbeat."""
    context.progress(1, "done")


# Set by a test to let a "progressing" task finish, by its payload's key.
release: dict[str, asyncio.Event] = {}


@kind("progressing")
async def progressing(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Reports half its progress, waits for the test to release it, and answers what its
    context said."""
    context.progress(0.5, "halfway")
    context.logger.info("halfway there")
    gate = release.setdefault(payload["key"], asyncio.Event())
    await asyncio.wait_for(gate.wait(), 20)
    left = (context.deadline - datetime.now(UTC)).total_seconds()
    return {
        "id": str(context.id),
        "attempt": context.attempt,
        "tenant": context.tenant,
        "queue": context.queue,
        "seconds_left": left,
    }


@kind("talkative")
async def talkative(payload: dict[str, Any], context: TaskContext) -> dict[str, int]:
    """Logs lines that name its attempt, then fails in a function of its own on the first
    attempt (a traceback to read) and succeeds on the next."""
    context.logger.info("attempt %d starts", context.attempt)
    context.logger.warning("payload has %d keys", len(payload))
    if context.attempt == 1:
        _give_up(payload)
    return {"attempt": context.attempt}


def _give_up(payload: dict[str, Any]) -> None:
    raise ValueError(f"no luck with {payload.get('what', 'this')}")


class Greeting(BaseModel):
    name: str = Field(min_length=1)
    times: int = Field(1, ge=1, le=3)


@kind("greet", payload=Greeting)
async def greet(payload: Greeting) -> dict[str, str]:
    """Greets someone by name: a kind whose payload has a model."""
    return {"greeting": " ".join([f"hello {payload.name}"] * payload.times)}
