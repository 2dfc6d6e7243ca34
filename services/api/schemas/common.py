"""What the shapes share: text and times as the service takes them, request bodies that
refuse unknown fields, and what the fields of many shapes mean."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from services.core.domain import NO_NUL, Task, in_range

Text = Annotated[str, Field(pattern=NO_NUL)]

TIMES = (
    "an RFC 3339 time with Z or an offset (2026-12-01T10:00:00Z), "
    "from 0001-01-02T00:00:00Z to 9999-12-30T23:59:59Z in UTC"
)
_RFC_3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc_3339(value: Any) -> Any:
    # Only text in RFC 3339 form goes on: pydantic would read a number as a Unix time.
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC_3339.fullmatch(value)):
        return value
    raise ValueError(f"must be {TIMES}")


def _in_utc(value: datetime) -> datetime:
    # Compared before the conversion, which overflows at the ends of the calendar.
    if not in_range(value):
        raise ValueError(f"must be {TIMES}")
    return value.astimezone(UTC)


# A finite time that PostgreSQL keeps as it is (see domain.in_range), in UTC.
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc_3339), AfterValidator(_in_utc)]

# How many unknown fields of a body are named one by one, before it is refused outright.
_UNKNOWN_NAMED = 20


class Body(BaseModel):
    """A request body. Unknown fields are refused, each named, as long as there are few:
    a body of many thousands would make as many errors."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _few_fields(cls, data: Any) -> Any:
        known = len(cls.model_fields)
        if isinstance(data, dict) and len(data) > known + _UNKNOWN_NAMED:
            raise ValueError(f"{len(data)} fields, of which at most {known} are known")
        return data


def absent(value: object) -> bool:
    """Left out of the JSON rather than null (the fields of problem+json documents)."""
    return value is None


_TASK_FIELDS: dict[str, str] = {
    field.name: field.metadata["description"] for field in dataclasses.fields(Task)
}


def of_task(name: str) -> str:
    """What the task's field `name` holds, as the domain's Task says: the same words
    wherever a shape carries that field of a task."""
    return _TASK_FIELDS[name]


ITEMS = "This page's entries"
NEXT_CURSOR = "Pass as `cursor` for the next page; null on the last one"
NAME = "Its name"
PAUSED = "True while paused: nothing of it starts"
CREATED = "When it was created"
UPDATED = "When it last changed"
OUTCOME = "How it ended"
