"""Handlers that give back what PostgreSQL cannot keep, loaded like any user's kinds module.

`plan(seed)` draws, from a seeded generator, everything one attempt of the `hostile` kind
will do: the progress notes it reports, then the value it returns or the error it raises.
The plan knows by construction whether its result can be stored once made fit (strings are
cleaned; NaN, types JSON does not have, nesting past 32 and more than 1 MiB are not), so a
test can tell what each task should end as without asking the code under test.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.core.errors import TaskFailed
from services.core.kinds import TaskContext, kind

# Far from the default bounds (32 levels, 1 MiB), so a plan's verdict is never borderline.
SHALLOW, DEEP = 6, 40
SMALL, HUGE = 2_000, 2_000_000

_TEXTS = ["\udc80", "a\ud800b", "\x00", "ok\x00\udcff", "\ud83d\ude00", "plain", "é\udfff"]


class Unprintable(Exception):
    """An exception whose message cannot even be read."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


@dataclass
class Plan:
    notes: list[str] = field(default_factory=list)
    pauses: list[float] = field(default_factory=list)
    error: BaseException | None = None
    value: Any = None
    # Whether the returned value can be stored once its strings are made valid.
    fit: bool = True


def text(rng: random.Random, plan: Plan) -> str:
    """Text with lone surrogates, NUL, pairs, or now and then a huge run."""
    if rng.random() < 0.05:
        plan.fit = False
        return rng.choice(_TEXTS) * (HUGE // 2)
    return "".join(rng.choice(_TEXTS) for _ in range(rng.randint(0, 8)))[:SMALL]


def value(rng: random.Random, plan: Plan, depth: int = 0) -> Any:
    """A JSON-looking value that may hold anything a handler could return."""
    roll = rng.random()
    if roll < 0.3 or depth >= 3:
        return _scalar(rng, plan)
    if roll < 0.4:
        return _nested(rng, plan)
    if roll < 0.7:
        return [value(rng, plan, depth + 1) for _ in range(rng.randint(0, 4))]
    made: dict[str, Any] = {}
    for _ in range(rng.randint(0, 4)):
        key = text(rng, plan)
        if key not in made:  # a value written over would leave the result without it
            made[key] = value(rng, plan, depth + 1)
    return made


def _scalar(rng: random.Random, plan: Plan) -> Any:
    fit = [lambda: text(rng, plan), lambda: 10**40, lambda: -0.0, lambda: None, lambda: True]
    unfit: list[Any] = [
        float("nan"),
        float("inf"),
        {1, 2},
        b"bytes",
        Decimal("1.5"),
        datetime.now(UTC),
        {1: "int key"},
        object(),
    ]
    if rng.random() < 0.85:
        return rng.choice(fit)()
    plan.fit = False
    return rng.choice(unfit)


def _nested(rng: random.Random, plan: Plan) -> Any:
    depth = rng.choice([SHALLOW, DEEP, 5_000])
    plan.fit = plan.fit and depth == SHALLOW
    nested: Any = text(rng, plan)
    for _ in range(depth):
        nested = [nested]
    return nested


def error(rng: random.Random, plan: Plan) -> BaseException:
    message = text(rng, plan) + ("x" * HUGE if rng.random() < 0.2 else "")
    return rng.choice(
        [
            lambda: TaskFailed(message, retryable=rng.random() < 0.5),
            lambda: ValueError(message),
            lambda: Unprintable(),
        ]
    )()


def plan(seed: int) -> Plan:
    """What one attempt of `hostile` with this seed does."""
    rng = random.Random(seed)
    made = Plan()
    for _ in range(rng.randint(1, 4)):
        made.notes.append(text(rng, Plan()))  # a note is cut and cleaned, never refused
        made.pauses.append(rng.uniform(0, 0.3))
    if rng.random() < 0.25:
        made.error = error(rng, made)
    else:
        made.value = value(rng, made)
    return made


@kind("hostile")
async def hostile(payload: dict[str, Any], context: TaskContext) -> Any:
    """Reports the plan's notes, then returns its value or raises its error."""
    made = plan(payload["seed"])
    for note, pause in zip(made.notes, made.pauses, strict=True):
        context.progress(0.5, note)
        await asyncio.sleep(pause)
    if made.error is not None:
        raise made.error
    return made.value


# Runs of each `steady` task, by its payload's key: more than one is a task started twice.
starts: Counter[str] = Counter()


@kind("steady")
async def steady(payload: dict[str, Any], context: TaskContext) -> dict[str, int]:
    """Another tenant's ordinary work: holds its slot across many heartbeats."""
    starts[payload["key"]] += 1
    for step in range(10):
        context.progress(step / 10, f"step {step}")
        await asyncio.sleep(payload["seconds"] / 10)
    return {"starts": starts[payload["key"]]}


@kind("bad_note")
async def bad_note(payload: dict[str, Any], context: TaskContext) -> dict[str, bool]:
    """Reports a progress note that is not UTF-8 (a file name as os.fsdecode gives it)
    at every turn, for `seconds`."""
    for _ in range(int(payload["seconds"] * 20)):
        context.progress(0.5, "copying \udcff\udcfe.bin")
        await asyncio.sleep(0.05)
    return {"done": True}


@kind("deep")
async def deep(payload: dict[str, Any]) -> Any:
    """Returns a list nested `depth` levels deep."""
    nested: Any = "bottom"
    for _ in range(payload["depth"]):
        nested = [nested]
    return nested


@kind("large")
async def large(payload: dict[str, Any]) -> Any:
    """Returns `result_bytes` of text, or raises an error of `error_bytes`."""
    if "error_bytes" in payload:
        raise TaskFailed("e" * payload["error_bytes"], retryable=False)
    return {"text": "r" * payload["result_bytes"]}
