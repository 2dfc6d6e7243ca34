"""The shapes of API.md, as pydantic models: what clients send and what they get back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType

from services.core.auth import ApiKey, Scope
from services.core.domain import NO_NUL, NewTask, Priority, Status

PAYLOAD_LIMIT = 64 * 1024
Text = Annotated[str, Field(pattern=NO_NUL)]


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once in UTC (years 1 to 9999)") from None


# A time with its offset that is still a time in UTC (0001-01-01T00:00+01:00 is not).
Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]
# Any JSON, as PostgreSQL can keep it: no NUL in a string or key, no NaN or Infinity.
JsonValue = TypeAliasType(  # type: ignore[misc]
    "JsonValue",
    "Text | int | Annotated[float, Field(allow_inf_nan=False)] | bool "
    "| list[JsonValue] | dict[Text, JsonValue] | None",
)


def json_depth(value: Any) -> int:
    """How deeply objects and lists nest in `value` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Text = Field(min_length=1, max_length=200)
    description: Text = Field("", max_length=10_000)
    priority: Priority = Priority.MEDIUM
    kind: str = Field("demo", min_length=1, max_length=100)
    payload: dict[Text, JsonValue] = Field(default_factory=dict)
    max_attempts: int = Field(3, ge=1, le=20)
    timeout_seconds: float | None = Field(None, gt=0, le=7 * 86_400)
    scheduled_at: Instant | None = None

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


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[Scope] = Field(min_length=1, max_length=4)
    name: Text = Field("", max_length=200)


class KeyOut(BaseModel):
    id: str
    tenant: str
    name: str
    scopes: list[Scope]
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None

    @classmethod
    def from_key(cls, key: ApiKey) -> KeyOut:
        return cls(id=key.id, tenant=key.tenant, name=key.name, scopes=sorted(key.scopes),
                   created_at=key.created_at, revoked_at=key.revoked_at)


class KeyCreated(KeyOut):
    key: str = Field(description="The whole key; shown this once and stored nowhere")


class KeyPage(BaseModel):
    items: list[KeyOut]
