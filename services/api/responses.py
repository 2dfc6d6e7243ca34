"""What every route answers with: JSON serialized once, and the problems it may return."""

from __future__ import annotations

import json

from fastapi import Response
from pydantic import BaseModel, TypeAdapter

from services.api.schemas import Problem
from services.core.domain import Task

_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
# Every route may refuse a request before it runs: no valid key, no scope, too many, too big.
REFUSALS = (401, 403, 429, 431, 503)


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """The `responses` of a route that may answer `codes`, besides the refusals."""
    return {code: _PROBLEM for code in (*codes, *REFUSALS)}


# A task as clients see it is the domain's Task, every field as stored: its fields are
# declared and described once, in the dataclass.
_TASK = TypeAdapter(Task)


def task_json(task: Task) -> bytes:
    """`task` as JSON, serialized in Rust straight from the dataclass."""
    return _TASK.dump_json(task)


def json_response(body: BaseModel | Task, status_code: int = 200, **headers: str) -> Response:
    """`body` as JSON."""
    # Serialized once, in Rust, from what the route built: FastAPI's response_model would
    # validate and encode it all over again. The documented shapes stay in the decorators.
    return Response(
        task_json(body) if isinstance(body, Task) else body.model_dump_json(),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def page_response(items: list[bytes], next_cursor: str | None) -> Response:
    """A page as JSON from its items, each already serialized: {"items", "next_cursor"}."""
    body = b'{"items":[%b],"next_cursor":%b}' % (b",".join(items), json.dumps(next_cursor).encode())
    return Response(body, media_type="application/json")
