"""The lean routes (services/api/lean.py) answer exactly as the FastAPI routes they stand
before: each request is sent to the API with them and to the same API without them, and
the answers compared (status, headers and body, ids and times aside). Those the lean routes
must serve themselves are shown to be served by them."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from services.api.app import create_app
from services.api.lean import LeanRoute
from services.core.auth import Scope
from services.core.db.engine import create_engine
from services.core.db.keys import SqlKeyStore
from services.core.settings import Settings
from tests.support.services import running_api

JSON = {"content-type": "application/json"}
TASKS = "/api/v1/tasks"
# (what, method, path, headers, body, whether the lean route serves it itself: None when
# it is refused before any route); "$ID" is a stored task's id, "$READER" a key that may
# only read, "$IDEM" an idempotency key of each API's own.
CASES: list[tuple[str, str, str, dict[str, str], bytes, bool | None]] = [
    ("a submit", "POST", TASKS, JSON, b'{"title": "t"}', True),
    (
        "a submit with every field",
        "POST",
        TASKS,
        JSON,
        b'{"title": "t", "description": "d", "priority": "HIGH", "kind": "noop",'
        b' "queue": "default", "payload": {"n": [1, 2.5, null, "\\u00e9"]}, "max_attempts": 5,'
        b' "timeout_seconds": 30}',
        True,
    ),
    (
        "an idempotent submit",
        "POST",
        TASKS,
        {**JSON, "idempotency-key": "$IDEM"},
        b'{"title": "i"}',
        True,
    ),
    ("its repeat", "POST", TASKS, {**JSON, "idempotency-key": "$IDEM"}, b'{"title": "i"}', True),
    (
        "the key reused",
        "POST",
        TASKS,
        {**JSON, "idempotency-key": "$IDEM"},
        b'{"title": "j"}',
        True,
    ),
    ("an empty key", "POST", TASKS, {**JSON, "idempotency-key": ""}, b'{"title": "t"}', False),
    (
        "a key too long",
        "POST",
        TASKS,
        {**JSON, "idempotency-key": "k" * 201},
        b'{"title": "t"}',
        False,
    ),
    ("an unknown kind", "POST", TASKS, JSON, b'{"title": "t", "kind": "nope"}', True),
    ("an unknown queue", "POST", TASKS, JSON, b'{"title": "t", "queue": "nope"}', True),
    (
        "a payload too deep",
        "POST",
        TASKS,
        JSON,
        b'{"title": "t", "payload": ' + b'{"a": ' * 70 + b"1" + b"}" * 71,
        True,
    ),
    ("no title", "POST", TASKS, JSON, b'{"kind": "noop"}', False),
    ("a wrong priority", "POST", TASKS, JSON, b'{"title": "t", "priority": "URGENT"}', False),
    ("a field too many", "POST", TASKS, JSON, b'{"title": "t", "colour": "red"}', False),
    ("a title not a string", "POST", TASKS, JSON, b'{"title": 5}', False),
    ("broken JSON", "POST", TASKS, JSON, b'{"title": ', False),
    ("an empty body", "POST", TASKS, JSON, b"", False),
    (
        "a body nested past what a parser follows",
        "POST",
        TASKS,
        JSON,
        b'{"title": "t", "payload": {"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}}",
        False,
    ),
    ("a JSON list", "POST", TASKS, JSON, b"[]", False),
    (
        "a charset",
        "POST",
        TASKS,
        {"content-type": "application/json; charset=utf-8"},
        b'{"title": "t"}',
        True,
    ),
    ("plain text", "POST", TASKS, {"content-type": "text/plain"}, b'{"title": "t"}', None),
    ("no key", "POST", TASKS, {**JSON, "authorization": ""}, b'{"title": "t"}', True),
    (
        "a made-up key",
        "POST",
        TASKS,
        {**JSON, "authorization": "Bearer cvk_abcdefghijkl_x"},
        b'{"title": "t"}',
        True,
    ),
    (
        "a key that may not submit",
        "POST",
        TASKS,
        {**JSON, "authorization": "Bearer $READER"},
        b'{"title": "t"}',
        True,
    ),
    ("a read", "GET", f"{TASKS}/$ID", {}, b"", True),
    ("a read by a reader", "GET", f"{TASKS}/$ID", {"authorization": "Bearer $READER"}, b"", True),
    ("a read of an unknown task", "GET", f"{TASKS}/{uuid.UUID(int=7)}", {}, b"", True),
    ("a read of no id", "GET", f"{TASKS}/not-an-id", {}, b"", False),
    ("a read with a wait", "GET", f"{TASKS}/$ID?wait=0.05", {}, b"", False),
    ("a read without a key", "GET", f"{TASKS}/$ID", {"authorization": ""}, b"", True),
]
_VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"
    r"|idem-(lean|full)"  # each API's own idempotency key
)
# Headers that differ between any two answers.
_SKIPPED = {"date", "content-length", "x-request-id"}


def _filled(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$[A-Z]+", lambda found: values[found.group()], text)


def _steady(text: str) -> str:
    return _VOLATILE.sub("<>", text)


def _answer(response: httpx.Response) -> tuple[int, dict[str, str], str]:
    headers = {k: _steady(v) for k, v in response.headers.items() if k not in _SKIPPED}
    return response.status_code, headers, _steady(response.text)


@pytest.fixture
async def keys(settings: Settings) -> AsyncIterator[dict[str, str]]:
    engine = create_engine(settings)
    store = SqlKeyStore(engine)
    submitter, _ = await store.create("lean", frozenset({Scope.SUBMIT, Scope.READ}))
    reader, _ = await store.create("lean", frozenset({Scope.READ}))
    yield {"$KEY": submitter, "$READER": reader}
    await engine.dispose()


def _spied(app: Any, served: list[bool]) -> Any:
    """`app` with its lean routes noting, per request, whether they served it."""
    for route in app.router.routes:
        if isinstance(route, LeanRoute):
            serve: Callable[..., Awaitable[Any]] = route._serve

            async def spy(*args: Any, _serve: Callable[..., Awaitable[Any]] = serve) -> Any:
                try:
                    answer = await _serve(*args)
                except Exception:
                    served.append(True)  # refused by the lean route itself
                    raise
                served.append(answer is not None)
                return answer

            route._serve = spy
    return app


def _without_lean_routes(settings: Settings) -> Any:
    app = create_app(settings)
    app.router.routes[:] = [r for r in app.router.routes if not isinstance(r, LeanRoute)]
    return app


async def test_the_lean_routes_answer_as_the_fastapi_routes(
    settings: Settings, keys: dict[str, str]
) -> None:
    secured = settings.model_copy(update={"auth_enabled": True})
    served: list[bool] = []
    async with (
        running_api(secured, app=_spied(create_app(secured), served)) as lean,
        running_api(secured, app=_without_lean_routes(secured)) as full,
    ):
        headers = {"authorization": f"Bearer {keys['$KEY']}"}
        stored = (await lean.post(TASKS, json={"title": "stored"}, headers=headers)).json()["id"]
        served.clear()
        for what, method, path, sent, body, by_lean in CASES:
            answers = []
            for api, idem in ((lean, "idem-lean"), (full, "idem-full")):
                values = {**keys, "$ID": stored, "$IDEM": idem}
                request_headers = {k: _filled(v, values) for k, v in {**headers, **sent}.items()}
                if request_headers.get("authorization") == "":
                    del request_headers["authorization"]
                url = path.replace("$ID", stored)
                response = await api.request(method, url, headers=request_headers, content=body)
                answers.append(_answer(response))
            assert answers[0] == answers[1], what
            assert served == ([] if by_lean is None else [by_lean]), what
            served.clear()
