"""The hot routes without FastAPI's per-request machinery: the submit of one task and the
read of one task, with the same answers for less CPU.

FastAPI's routing, dependency solving and validation around a submit cost about 0.1 ms of
CPU (about 8% of the API's CPU per create at 4 connections, measured against the FastAPI
route alone). A lean route stands before the FastAPI route of its path, which stays (it
makes the OpenAPI document and answers everything else), and takes only the requests whose
every part is valid: a JSON body its model accepts, headers within their bounds, no query.
It then runs what the FastAPI route would, in the same order (services, key, scope, tenant
line, rate limit) and answers with the route's own function. Any other request goes to the
FastAPI route as it came (its body replayed), so each refusal is made in one place only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from services.api.auth import admitted, bearer
from services.api.deps import services_of
from services.api.routes import tasks
from services.api.schemas import TaskCreate
from services.core.auth import Scope as KeyScope

# Set in the scope of a request a lean route hands on: the routes then skip it.
HANDED_ON = "conveyor.handed_on"
# What FastAPI checks a task id of the path with.
_TASK_ID = TypeAdapter(uuid.UUID)
# Idempotency-Key's bounds, as the FastAPI route declares them.
_KEY_LENGTH = range(1, 201)

Serve = Callable[[Request, bytes], Awaitable[Response | None]]
M = TypeVar("M", bound=BaseModel)


class LeanRoute(Route):
    """`method path` served by `serve` (given the request and its body), which answers None
    for a request it leaves to the FastAPI route of the same path."""

    def __init__(self, path: str, method: str, serve: Serve) -> None:
        super().__init__(path, _unused, methods=[method], include_in_schema=False)
        self._method = method
        self._serve = serve

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(HANDED_ON) or scope.get("method") != self._method:
            return Match.NONE, {}
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self  # the route template of the HTTP metrics: the same path
        request = Request(scope, receive)
        body = await request.body() if self._method == "POST" else b""
        answer = await self._serve(request, body)
        if answer is None:
            replay = _replaying(body, receive)
            await scope["app"].router({**scope, HANDED_ON: True}, replay, send)
        else:
            await answer(scope, receive, send)


def install(app: FastAPI) -> None:
    """Put the lean routes before every other route of `app`."""
    app.router.routes[:0] = [
        LeanRoute(tasks.router.prefix, "POST", _submit),
        LeanRoute(f"{tasks.router.prefix}/{{task_id}}", "GET", _read),
    ]


async def _submit(request: Request, raw: bytes) -> Response | None:
    """POST /api/v1/tasks, as tasks.submit_task."""
    body = _model(request, raw, TaskCreate)
    key = request.headers.get("idempotency-key")
    if body is None or (key is not None and len(key) not in _KEY_LENGTH):
        return None
    services = await services_of(request)
    async with admitted(services, await bearer(request), KeyScope.SUBMIT) as principal:
        return await tasks.submit_task(body, services, principal, key)


async def _read(request: Request, _: bytes) -> Response | None:
    """GET /api/v1/tasks/{task_id} without a query (no wait), as tasks.get_task."""
    if request.scope["query_string"]:
        return None
    try:
        task_id = _TASK_ID.validate_python(request.path_params["task_id"])
    except ValidationError:
        return None
    services = await services_of(request)
    async with admitted(services, await bearer(request), KeyScope.READ) as principal:
        return await tasks.get_task(task_id, services, principal)


def _model(request: Request, body: bytes, model: type[M]) -> M | None:
    """The request's JSON body as `model`, or None for anything FastAPI would refuse or
    read otherwise (another media type, text that is not JSON or nested past what the
    parser follows, a body the model refuses)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json":
        return None
    try:
        return model.model_validate(json.loads(body))
    except (ValueError, RecursionError):  # pydantic's ValidationError is a ValueError
        return None


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body already read given once more, as one message."""
    given = False

    async def again() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


async def _unused(*_: Any) -> None:  # pragma: no cover - handle() is overridden
    raise NotImplementedError
