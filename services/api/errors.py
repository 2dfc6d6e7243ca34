"""Every error becomes an application/problem+json answer, mapped in this one place."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.problems import ProblemType
from services.core.errors import (
    AttemptNotFound,
    ConveyorError,
    IdempotencyConflict,
    KeyNotFound,
    ScheduleNameTaken,
    ScheduleNotFound,
    StoreUnavailable,
    TaskAlreadyTerminal,
    TaskNotFound,
    TaskNotRerunnable,
    TooManyKeys,
    TooManySchedules,
)

logger = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
RETRY_AFTER_SECONDS = 5
# An answer stays small whatever the request: so many errors listed, names and messages
# cut at so many characters, and the rest only counted.
MAX_ERRORS = 20
MAX_NAME = 100
MAX_MESSAGE = 300


class Refused(Exception):
    """A request the service turns away: no valid key, no scope, too many; or, with `loc`,
    a field the models accept but the service refuses (an unknown kind, a bad cursor)."""

    def __init__(
        self,
        status: int,
        problem_type: ProblemType,
        detail: str,
        headers: dict[str, str] | None = None,
        loc: Sequence[str | int] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.problem_type = problem_type
        self.headers = headers
        self.loc = list(loc) if loc is not None else None


def problem(
    status: int,
    detail: str,
    *,
    problem_type: ProblemType | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    more_errors: int = 0,
) -> JSONResponse:
    """A problem+json response; `more_errors` counts the errors left out of `errors`."""
    body = problem_body(
        status, detail, problem_type=problem_type, errors=errors, more_errors=more_errors
    )
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)


def problem_body(
    status: int,
    detail: str,
    *,
    problem_type: ProblemType | None = None,
    errors: list[dict[str, Any]] | None = None,
    more_errors: int = 0,
) -> dict[str, Any]:
    """An RFC 9457 problem document, as a response body or one item of a batch's answer."""
    body: dict[str, Any] = {
        "type": problem_type.uri if problem_type else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    if more_errors:
        body["more_errors"] = more_errors
    return body


def invalid_body(every: Sequence[Any], prefix: Sequence[str | int] = ()) -> dict[str, Any]:
    """The 422 problem of pydantic's errors, each `loc` under `prefix`."""
    located = [{**error, "loc": [*prefix, *error["loc"]]} for error in every]
    errors = _field_problems(located)
    more = len(every) - len(errors)
    return problem_body(
        422,
        _detail(errors, more),
        problem_type=ProblemType.VALIDATION,
        errors=errors,
        more_errors=more,
    )


def refused_body(error: Refused | ConveyorError) -> dict[str, Any]:
    """The problem of a refusal or of a domain error (a reused idempotency key, ...)."""
    if isinstance(error, ConveyorError):
        status, problem_type = _DOMAIN[type(error)]
        return problem_body(status, str(error), problem_type=problem_type)
    if error.loc is None:
        return problem_body(error.status, str(error), problem_type=error.problem_type)
    errors = _field_problems([{"loc": error.loc, "msg": str(error)}])
    return problem_body(
        error.status, _detail(errors), problem_type=error.problem_type, errors=errors
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _field_problems(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """The first MAX_ERRORS errors, with long names (a key of the body) cut short."""
    return [
        {
            "loc": [_cut(p, MAX_NAME) if isinstance(p, str) else p for p in error["loc"]],
            "msg": _cut(error["msg"], MAX_MESSAGE),
        }
        for error in errors[:MAX_ERRORS]
    ]


def _detail(errors: list[dict[str, Any]], more: int = 0) -> str:
    listed = "; ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in errors)
    return f"{listed}; and {more} more errors" if more else listed


# Domain errors -> (status, problem type). The only place that knows both sides.
_DOMAIN: dict[type[Exception], tuple[int, ProblemType]] = {
    TaskNotFound: (404, ProblemType.TASK_NOT_FOUND),
    AttemptNotFound: (404, ProblemType.ATTEMPT_NOT_FOUND),
    KeyNotFound: (404, ProblemType.KEY_NOT_FOUND),
    TaskAlreadyTerminal: (409, ProblemType.TASK_TERMINAL),
    TaskNotRerunnable: (409, ProblemType.TASK_NOT_RERUNNABLE),
    IdempotencyConflict: (409, ProblemType.IDEMPOTENCY_KEY_REUSED),
    TooManyKeys: (409, ProblemType.TOO_MANY_KEYS),
    ScheduleNotFound: (404, ProblemType.SCHEDULE_NOT_FOUND),
    ScheduleNameTaken: (409, ProblemType.SCHEDULE_NAME_TAKEN),
    TooManySchedules: (409, ProblemType.TOO_MANY_SCHEDULES),
}


async def _on_domain(_: Request, error: Exception) -> JSONResponse:
    if isinstance(error, StoreUnavailable):
        logger.warning("PostgreSQL unavailable: %s", error)
        return problem(
            503,
            "the database is unavailable; try again shortly",
            problem_type=ProblemType.DATABASE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    status, problem_type = _DOMAIN.get(type(error), (500, ProblemType.INTERNAL))
    if status == 500:
        return await _on_unexpected(_, error)
    return problem(status, str(error), problem_type=problem_type)


async def _on_validation(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return JSONResponse(invalid_body(error.errors()), status_code=422, media_type=PROBLEM)


async def _on_refused(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, Refused)
    return JSONResponse(
        refused_body(error), status_code=error.status, headers=error.headers, media_type=PROBLEM
    )


async def _on_http(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    # FastAPI's one 400 is a body its JSON parser gave up on (nested past recursion).
    errors = [{"loc": ["body"], "msg": str(error.detail)}] if error.status_code == 400 else None
    headers = dict(error.headers) if error.headers else None
    if error.status_code == 405:  # every method of the path, not only the first route's
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return problem(error.status_code, str(error.detail), headers=headers, errors=errors)


def _every_route(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes, those of included routers among them."""
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from _every_route(included.routes) if included is not None else [route]


async def method_not_allowed(_: Request) -> None:
    """Stands for the methods an action path (`/tasks/{id}:retry`) does not take, which
    would otherwise reach the route of `/tasks/{id}` and be answered as a bad id."""
    raise HTTPException(405)


def refuse_other_methods(app: FastAPI) -> None:
    """Answer 405, with Allow, to a method that no route of an action path takes."""
    for route in list(_every_route(app.routes)):
        path, methods = getattr(route, "path", ""), getattr(route, "methods", None)
        if methods and re.search(r"}:[a-z]+$", path):
            others = sorted({"GET", "PUT", "PATCH", "DELETE"} - set(methods))
            refusal = Route(path, method_not_allowed, methods=others, include_in_schema=False)
            app.router.routes.insert(0, refusal)


def allowed_methods(request: Request) -> list[str]:
    """The methods some route takes at the request's path."""
    found: dict[int, set[str]] = {}
    for route in _every_route(request.app.routes):
        if getattr(route, "endpoint", None) is method_not_allowed:
            continue
        for method in getattr(route, "methods", None) or ():
            if route.matches({**request.scope, "method": method})[0] is Match.FULL:
                # /tasks/{id}:retry also fits /tasks/{id}: the path most spelt out wins.
                literal = len(re.sub(r"{[^}]*}", "", getattr(route, "path", "")))
                found.setdefault(literal, set()).add(method)
    return sorted(found[max(found)]) if found else []


async def _on_unexpected(_: Request, error: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=error)
    return problem(500, "an unexpected error occurred", problem_type=ProblemType.INTERNAL)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the table above."""
    app.add_exception_handler(ConveyorError, _on_domain)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(Refused, _on_refused)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)


# Methods that change nothing: another site's page may send them (it cannot read the answer).
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON = "application/json"


def _has_body(headers: dict[bytes, bytes], declared: bytes | None) -> bool:
    return b"transfer-encoding" in headers or (declared is not None and declared not in (b"", b"0"))


def _is_json(content_type: bytes) -> bool:
    """application/json, or a type of its family (application/problem+json)."""
    media = content_type.split(b";", 1)[0].strip().lower()
    family = media.startswith(b"application/") and media.endswith(b"+json")
    return media == JSON.encode() or family


def _not_json(content_type: bytes | None) -> JSONResponse:
    """415 for a body that is not JSON: every body this API reads is."""
    sent = content_type.decode("latin-1")[:100] if content_type else "no Content-Type"
    detail = f"the body must be {JSON}, not {sent}"
    return problem(
        415,
        detail,
        problem_type=ProblemType.UNSUPPORTED_MEDIA_TYPE,
        headers={"Accept-Post": JSON},
        errors=[{"loc": ["header", "content-type"], "msg": f"expected {JSON}"}],
    )


def cross_site(headers: dict[bytes, bytes]) -> bool:
    """True when a browser says the request comes from a page of another origin: its
    Sec-Fetch-Site (a sibling subdomain counts as another), or, from browsers too old to
    send that, an Origin other than the address it was sent to. Programs send neither."""
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        return site not in (b"same-origin", b"none")
    origin = headers.get(b"origin")
    if origin is None:
        return False
    return origin.partition(b"://")[2] != headers.get(b"host", b"")


_LOOPBACK = frozenset({b"127.0.0.1", b"localhost", b"[::1]"})
_PORT = re.compile(rb":\d+$")
# What a page may read of an API with keys off, whatever its address: nothing of a tenant.
_OPEN_PATHS = ("/health/", "/metrics")


class RequestLimits:
    """Refuse oversized headers (431) and bodies (413), and changes asked for by another
    site's page (403: with API keys off, on a laptop, nothing else would stop a page
    from pausing a queue), before anything parses them. With `hosts` (keys off), a
    request must name as its Host a loopback address or one of `hosts` (the names an
    installation is reached by, such as its Service's): a page of another site whose name
    was made to point at the API (DNS rebinding) is same-origin to itself and would read
    every task otherwise. None (keys on) answers any Host."""

    def __init__(
        self,
        app: ASGIApp,
        body_bytes: int,
        header_bytes: int,
        hosts: Iterable[str] | None = None,
    ) -> None:
        self.app = app
        self.body_bytes = body_bytes
        self.header_bytes = header_bytes
        self.hosts = None if hosts is None else _LOOPBACK | {h.lower().encode() for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope["headers"]
        if sum(len(name) + len(value) for name, value in headers) > self.header_bytes:
            return await self._refuse(scope, receive, send, 431, "headers", self.header_bytes)
        named = dict(headers)
        if not self._answers_at(named.get(b"host", b"")) and not scope["path"].startswith(
            _OPEN_PATHS
        ):
            detail = (
                "with API keys off, this API answers only at a loopback address or ALLOWED_HOSTS"
            )
            return await problem(403, detail, problem_type=ProblemType.LOOPBACK_ONLY)(
                scope, receive, send
            )
        if scope["method"] not in _SAFE_METHODS and cross_site(named):
            detail = "a page of another site may not change anything here"
            return await problem(403, detail, problem_type=ProblemType.CROSS_SITE)(
                scope, receive, send
            )
        declared = named.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_bytes:
            return await self._refuse(scope, receive, send, 413, "body", self.body_bytes)
        if _has_body(named, declared) and not _is_json(named.get(b"content-type", b"")):
            return await _not_json(named.get(b"content-type"))(scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.body_bytes:  # a streamed body with no Content-Length
                raise HTTPException(413, f"the request body is over {self.body_bytes} bytes")
            return message

        await self.app(scope, limited, send)

    def _answers_at(self, host: bytes) -> bool:
        return self.hosts is None or _PORT.sub(b"", host.lower()) in self.hosts

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: int, part: str, limit: int
    ) -> None:
        detail = f"request {part} over the limit of {limit} bytes"
        response = problem(
            status,
            detail,
            problem_type=ProblemType.TOO_LARGE,
            errors=[{"loc": [part], "msg": f"at most {limit} bytes"}],
        )
        await response(scope, receive, send)
