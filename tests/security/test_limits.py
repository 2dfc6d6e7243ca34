"""A careless or hostile client: too many requests, huge headers, deep payloads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from services.api.schemas import BATCH_LIMIT
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
    three = {"tasks": [{"title": "t", "kind": "noop"}] * 3}
    assert (await alice.request("POST", "/api/v1/tasks:batch", json=three)).status_code == 200
    # Six tasks wait for a full window (5 of 5/minute): 3 more requests, 12 s each.
    six = {"tasks": [{"title": "t", "kind": "noop"}] * 6}
    refused = await alice.request("POST", "/api/v1/tasks:batch", json=six)
    assert refused.status_code == 429 and await _stored(store) == 3
    assert 35 <= int(refused.headers["retry-after"]) <= 36
    # The refused batch spent nothing: two requests still fit, and no more.
    assert (await alice.request("GET", "/api/v1/tasks")).status_code == 200
    assert (await alice.request("GET", "/api/v1/tasks")).status_code == 200
    assert (await alice.request("GET", "/api/v1/tasks")).status_code == 429
    assert await _stored(store) == 3


async def test_a_batch_of_any_size_passes_the_default_limit_once_retry_after_has_passed(
    secured: Settings, caller: Callable[..., Awaitable[Caller]], store: SqlTaskStore
) -> None:
    default = Settings.model_fields["rate_limit"].default
    async with running_api(secured.model_copy(update={"rate_limit": default})) as client:
        largest = {"tasks": [{"title": "t", "kind": "noop"}] * BATCH_LIMIT}
        alice = Caller(client, "alice", (await caller("alice")).key)
        answer = await alice.request("POST", "/api/v1/tasks:batch", json=largest)
        assert answer.status_code == 200, answer.text  # more than a window's worth
        bob = Caller(client, "bob", (await caller("bob")).key)
        batch = {"tasks": [{"title": "t", "kind": "noop"}] * 150}
        assert (await bob.request("POST", "/api/v1/tasks:batch", json=batch)).status_code == 200
        # Bob's key owes 50 requests now: his next batch waits for them and a full window.
        refused = await bob.request("POST", "/api/v1/tasks:batch", json=batch)
        assert refused.status_code == 429
        await asyncio.sleep(int(refused.headers["retry-after"]))
        again = await bob.request("POST", "/api/v1/tasks:batch", json=batch)
        assert again.status_code == 200, again.text
    assert len((await store.page(TaskFilter(), 100)).items) == 100  # a page of the 1,300


async def test_a_key_s_limit_holds_across_api_processes(
    secured: Settings, caller: Callable[..., Awaitable[Caller]]
) -> None:
    settings = secured.model_copy(update={"rate_limit": "5/minute"})
    key = (await caller("alice")).key
    async with running_api(settings) as one, running_api(settings) as other:
        alice = [Caller(one, "alice", key), Caller(other, "alice", key)]
        answers = [
            (await alice[n % 2].request("GET", "/api/v1/tasks")).status_code for n in range(5)
        ]
        assert answers == [200] * 5
        for api in alice:  # five in all, wherever they were answered
            refused = await api.request("GET", "/api/v1/tasks")
            assert refused.status_code == 429
            assert 11 <= int(refused.headers["retry-after"]) <= 12
