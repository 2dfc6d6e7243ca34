"""The shapes of API.md, as pydantic models: what clients send and what they get back."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.core.domain import NewTask, Priority, Status

PAYLOAD_LIMIT = 64 * 1024


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    priority: Priority = Priority.MEDIUM
    kind: str = Field("demo", min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)
    max_attempts: int = Field(3, ge=1, le=20)
    timeout_seconds: float | None = Field(None, gt=0, le=7 * 86_400)
    scheduled_at: AwareDatetime | None = None

    def to_new_task(self) -> NewTask:
        return NewTask(**{name: getattr(self, name) for name in type(self).model_fields})


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    description: str
    priority: Priority
    status: Status
    kind: str
    payload: dict[str, Any]
    result: Any
    error: str | None
    attempts: int
    max_attempts: int
    timeout_seconds: float | None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    scheduled_at: AwareDatetime | None
    started_at: AwareDatetime | None
    finished_at: AwareDatetime | None
    cancel_requested: bool


class TaskStatusOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: Status
    attempts: int
    updated_at: AwareDatetime
    cancel_requested: bool


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = None
