"""A careless or hostile client: too many requests, huge headers, deep payloads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from services.core.db.store import SqlTaskStore
from services.core.domain import TaskFilter
from services.core.settings import Settings
from tests.security.conftest import Caller
from tests.support.services import running_api


async def _stored(store: SqlTaskStore) -> int:
    return len((await store.page(TaskFilter(), 100)).items)


@pytest.fixture
async def limited(secured: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(secured.model_copy(update={"rate_limit": "5/minute"})) as client:
        yield client


async def test_a_key_over_its_rate_gets_429_with_retry_after(
    limited: httpx.AsyncClient, caller: Callable[..., Awaitable[Caller]]
) -> None:
    noisy = Caller(limited, "alice", (await caller("alice")).key)
    quiet = Caller(limited, "bob", (await caller("bob")).key)

    answers = [(await noisy.request("GET", "/api/v1/tasks")).status_code for _ in range(5)]
    refused = await noisy.request("GET", "/api/v1/tasks")

    assert answers == [200] * 5
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert (await quiet.request("GET", "/api/v1/tasks")).status_code == 200


async def test_headers_over_the_limit_get_431_and_store_nothing(
    caller: Callable[..., Awaitable[Caller]], secured: Settings, store: SqlTaskStore
) -> None:
    who = await caller("alice")
    padding = {"X-Padding": "x" * secured.max_header_bytes}

    response = await who.request("POST", "/api/v1/tasks", json={"title": "t"}, headers=padding)

    assert response.status_code == 431
    assert response.json()["errors"] == [
        {"loc": ["headers"], "msg": f"at most {secured.max_header_bytes} bytes"}
    ]
    assert await _stored(store) == 0


def _nested(depth: int) -> dict[str, object]:
    payload: dict[str, object] = {}
    for _ in range(depth - 1):
        payload = {"a": payload}
    return payload


async def test_a_payload_nested_too_deep_gets_422_naming_payload(
    caller: Callable[..., Awaitable[Caller]], secured: Settings, store: SqlTaskStore
) -> None:
    who = await caller("alice")
    limit = secured.max_payload_depth

    deep = await who.request(
        "POST", "/api/v1/tasks", json={"title": "t", "payload": _nested(limit + 1)}
    )
    at_limit = await who.request(
        "POST", "/api/v1/tasks", json={"title": "t", "payload": _nested(limit)}
    )

    assert deep.status_code == 422
    assert deep.json()["errors"][0]["loc"] == ["body", "payload"]
    assert at_limit.status_code == 201
    assert await _stored(store) == 1


async def test_a_body_nested_beyond_what_a_parser_can_follow_gets_400_naming_body(
    caller: Callable[..., Awaitable[Caller]], store: SqlTaskStore
) -> None:
    who = await caller("alice")
    body = '{"title": "t", "payload": {"a": ' + "[" * 200_000 + "]" * 200_000 + "}}"

    response = await who.request(
        "POST", "/api/v1/tasks", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["body"]
    assert await _stored(store) == 0


async def test_a_batch_is_metered_per_task(
    limited: httpx.AsyncClient, caller: Callable[..., Awaitable[Caller]], store: SqlTaskStore
) -> None:
    alice = Caller(limited, "alice", (await caller("alice")).key)
    six = {"tasks": [{"title": "t", "kind": "noop"}] * 6}
    refused = await alice.request("POST", "/api/v1/tasks:batch", json=six)
    assert refused.status_code == 429 and await _stored(store) == 0  # 6 tasks > 5/minute
    assert "retry-after" in refused.headers
    # The refused batch spent one request (its own), not six: three tasks still fit...
    three = {"tasks": [{"title": "t", "kind": "noop"}] * 3}
    assert (await alice.request("POST", "/api/v1/tasks:batch", json=three)).status_code == 200
    # ... then one more request, and no more.
    assert (await alice.request("GET", "/api/v1/tasks")).status_code == 200
    assert (await alice.request("GET", "/api/v1/tasks")).status_code == 429
    assert await _stored(store) == 3
