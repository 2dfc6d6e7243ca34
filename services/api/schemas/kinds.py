"""Kinds: what the installation's workers run, with their payload schemas."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, Field

from services.api.schemas.common import ITEMS


class KindVersionOut(BaseModel):
    """One version of a kind that the API takes now: the one its live workers run (two
    during a rollout), or, with none alive, the one registered last."""

    digest: str = Field(description="Names this version: a hash of all that its workers said")
    version: str = Field(description="The Conveyor version of the worker that registered it")
    registered_at: AwareDatetime | None = Field(
        description="When a worker last registered it; null for a built-in kind no worker "
        "registered yet"
    )
    workers: int = Field(description="Live workers that run this version")
    queue: str = Field(description="Where its tasks go unless their submission names a queue")
    timeout_seconds: float | None = Field(
        description="Its per-attempt time limit, unless a task gives its own"
    )
    payload_schema: dict[str, Any] | None = Field(
        description="The JSON Schema its payload must fit; null: any JSON object"
    )


class KindOut(BaseModel):
    """A kind the API takes: a built-in one, or one some worker registered."""

    name: str = Field(description="What a task names as its kind")
    description: str = Field(description="The first paragraph of its handler's docstring")
    builtin: bool = Field(description="Every worker runs it")
    queue: str = Field(description="Its newest version's queue")
    workers: int = Field(description="Live workers that run it")
    payload_schema: dict[str, Any] | None = Field(
        description="Its newest version's payload schema (null: any JSON object); a payload "
        "is taken when it fits any of its versions'"
    )
    versions: list[KindVersionOut] = Field(description="Its current versions, newest first")


class KindPage(BaseModel):
    items: list[KindOut] = Field(description=ITEMS)
