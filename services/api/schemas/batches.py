"""Batches: up to BATCH_LIMIT tasks in one request, and each one's outcome."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from services.api.schemas.common import ITEMS, OUTCOME, Body, absent
from services.api.schemas.problem import Problem
from services.api.schemas.tasks import TaskCreate
from services.core.domain import Task

BATCH_LIMIT = 1000
# A batch's answer gives the problem of its first so many refused tasks; the others are
# answered by their outcome and status alone, so refusals cost little whatever is sent.
BATCH_PROBLEMS = 20


class BatchTask(TaskCreate):
    """One task of a batch: a task body, and its own idempotency key."""

    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Makes this task's submission safe to repeat, as Idempotency-Key does",
    )


class BatchCreate(Body):
    tasks: list[Any] = Field(
        min_length=1,
        max_length=BATCH_LIMIT,
        description=f"1 to {BATCH_LIMIT} task bodies, each a BatchTask; each is checked on its "
        "own, so one that is refused refuses only itself",
    )


class BatchItem(BaseModel):
    """The outcome of one task of a batch, in the order sent."""

    outcome: Literal["created", "repeated", "refused"] = Field(description=OUTCOME)
    status: int = Field(description="What a single submit would have answered: 201, 200 or 4xx")
    # Left out rather than null: a refused task's answer stays a few bytes.
    task: Task | None = Field(
        None,
        exclude_if=absent,
        description="The task stored (created) or found (repeated); absent when refused",
    )
    problem: Problem | None = Field(
        None,
        exclude_if=absent,
        description=f"Why this one was refused, for the first {BATCH_PROBLEMS} refused "
        "tasks (at most 3 errors, texts cut short); absent for the others",
    )


class BatchOut(BaseModel):
    COUNTED: ClassVar = ("created", "repeated", "refused")

    items: list[BatchItem] = Field(description=ITEMS)
    created: int = Field(description="Tasks stored")
    repeated: int = Field(
        description="Tasks sent before with the same idempotency key (answered, not stored again)"
    )
    refused: int = Field(
        description=f"Tasks refused (the first {BATCH_PROBLEMS} with their problem)"
    )
    more_problems: int | None = Field(
        None,
        ge=1,
        exclude_if=absent,
        description="Refused tasks whose problem is left out (past the first "
        f"{BATCH_PROBLEMS}); absent when none is",
    )
