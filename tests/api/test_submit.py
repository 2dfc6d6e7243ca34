"""POST /api/v1/tasks: what is stored, what is refused, and idempotent repeats."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.services import submit, wait_for


async def count_tasks(api: httpx.AsyncClient) -> int:
    response = await api.get("/api/v1/tasks", params={"limit": 100})
    return len(response.json()["items"])


async def test_submit_stores_the_task_with_defaults(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/tasks", json={"title": "hello"})
    assert response.status_code == 201
    task = response.json()
    assert response.headers["location"] == f"/api/v1/tasks/{task['id']}"
    assert task["status"] in {"NEW", "PENDING"}
    assert task | {"id": None, "status": None, "created_at": None, "updated_at": None} == {
        "id": None,
        "title": "hello",
        "description": "",
        "priority": "MEDIUM",
        "status": None,
        "kind": "demo",
        "queue": "default",
        "payload": {},
        "result": None,
        "error": None,
        "attempts": 0,
        "max_attempts": 3,
        "timeout_seconds": None,
        "created_at": None,
        "updated_at": None,
        "scheduled_at": None,
        "started_at": None,
        "finished_at": None,
        "cancel_requested": False,
        "progress": None,
    }
    assert task["created_at"].endswith("Z")
    assert (await api.get(f"/api/v1/tasks/{task['id']}")).json()["title"] == "hello"


async def test_a_submitted_task_becomes_pending_once_the_broker_confirms(
    api: httpx.AsyncClient,
) -> None:
    task = await submit(api, kind="noop")
    assert (await wait_for(api, task["id"], {"PENDING"}, timeout=5))["status"] == "PENDING"


async def test_a_task_scheduled_for_later_waits_as_pending(api: httpx.AsyncClient) -> None:
    task = await submit(api, scheduled_at="2999-01-01T00:00:00Z")
    assert task["status"] == "PENDING"
    assert task["scheduled_at"] == "2999-01-01T00:00:00Z"


BAD_BODIES: list[tuple[Any, list[str]]] = [
    ({}, ["body", "title"]),
    ({"title": ""}, ["body", "title"]),
    ({"title": "x" * 201}, ["body", "title"]),
    ({"title": "t", "description": "x" * 10_001}, ["body", "description"]),
    ({"title": "t", "priority": "URGENT"}, ["body", "priority"]),
    ({"title": "t", "kind": "no-such-kind"}, ["body", "kind"]),
    ({"title": "t", "payload": [1, 2]}, ["body", "payload"]),
    ({"title": "t", "payload": None}, ["body", "payload"]),
    ({"title": "t", "max_attempts": 0}, ["body", "max_attempts"]),
    ({"title": "t", "max_attempts": 21}, ["body", "max_attempts"]),
    ({"title": "t", "timeout_seconds": 0}, ["body", "timeout_seconds"]),
    ({"title": "t", "scheduled_at": "tomorrow"}, ["body", "scheduled_at"]),
    ({"title": "t", "scheduled_at": "2030-01-01T00:00:00"}, ["body", "scheduled_at"]),
    ({"title": "t", "colour": "red"}, ["body", "colour"]),
    ([1, 2], ["body"]),
]


@pytest.mark.parametrize(("body", "loc"), BAD_BODIES)
async def test_bad_bodies_get_422_naming_the_field_and_store_nothing(
    api: httpx.AsyncClient, body: Any, loc: list[str]
) -> None:
    response = await api.post("/api/v1/tasks", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] and problem["type"]
    assert loc in [error["loc"] for error in problem["errors"]]
    assert await count_tasks(api) == 0


async def test_malformed_json_gets_422_and_stores_nothing(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert await count_tasks(api) == 0


BODY = b'{"title": "t", "kind": "noop"}'


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/tasks", "text/plain"),
        ("/api/v1/tasks", "application/x-www-form-urlencoded"),  # what curl -d sends
        ("/api/v1/tasks", None),
        ("/api/v1/tasks:batch", "text/plain"),
        ("/api/v1/tasks:cancel", "application/x-www-form-urlencoded"),
    ],
)
async def test_a_body_that_is_not_json_gets_415_naming_the_type_and_stores_nothing(
    api: httpx.AsyncClient, path: str, content_type: str | None
) -> None:
    queued = await submit(api, title="stays", kind="noop")
    headers = {"content-type": content_type} if content_type else {}
    response = await api.post(path, content=BODY, headers=headers)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["accept-post"] == "application/json"
    problem = response.json()
    assert problem["type"] == "urn:conveyor:problem:unsupported-media-type"
    assert (
        problem["detail"]
        == f"the body must be application/json, not {content_type or 'no Content-Type'}"
    )
    assert problem["errors"] == [
        {"loc": ["header", "content-type"], "msg": "expected application/json"}
    ]
    assert await count_tasks(api) == 1
    assert (await api.get(f"/api/v1/tasks/{queued['id']}")).json()["status"] != "CANCELLED"


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "application/merge+json", "APPLICATION/JSON"],
)
async def test_json_by_any_of_its_names_is_read(api: httpx.AsyncClient, content_type: str) -> None:
    response = await api.post("/api/v1/tasks", content=BODY, headers={"content-type": content_type})
    assert response.status_code == 201, response.text


async def test_an_action_without_a_body_needs_no_content_type(api: httpx.AsyncClient) -> None:
    task = await submit(api, title="t", kind="noop", scheduled_at="2999-01-01T00:00:00Z")
    assert (await api.delete(f"/api/v1/tasks/{task['id']}")).status_code == 200
    response = await api.post(f"/api/v1/tasks/{task['id']}:retry")
    assert response.status_code == 200, response.text


async def test_a_payload_over_64_kib_gets_413_naming_payload(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/tasks", json={"title": "t", "payload": {"blob": "x" * 70_000}}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["loc"] == ["body", "payload"]
    assert await count_tasks(api) == 0


async def test_a_body_over_the_request_limit_gets_413(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/tasks", content=b"x" * 1_100_000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert await count_tasks(api) == 0


async def test_a_streamed_body_over_the_limit_gets_413(api: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 100_000

    response = await api.post(
        "/api/v1/tasks", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert await count_tasks(api) == 0


async def test_a_repeated_idempotency_key_returns_the_same_task(api: httpx.AsyncClient) -> None:
    body = {"title": "once", "payload": {"n": 1}}
    first = await api.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "k-1"})
    again = await api.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert await count_tasks(api) == 1


async def test_an_idempotency_key_with_another_body_is_409(api: httpx.AsyncClient) -> None:
    await api.post("/api/v1/tasks", json={"title": "a"}, headers={"Idempotency-Key": "k-2"})
    response = await api.post(
        "/api/v1/tasks", json={"title": "b"}, headers={"Idempotency-Key": "k-2"}
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert await count_tasks(api) == 1


@pytest.mark.parametrize("key", ["", "k" * 201])
async def test_an_idempotency_key_out_of_range_is_422(api: httpx.AsyncClient, key: str) -> None:
    response = await api.post(
        "/api/v1/tasks", json={"title": "a"}, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 422
    assert ["header", "idempotency-key"] in [e["loc"] for e in response.json()["errors"]]
    assert await count_tasks(api) == 0


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ('{"title": "a\\u0000b"}', ["body", "title"]),
        ('{"title": "t", "payload": {"k\\u0000": 1}}', ["body", "payload"]),
        ('{"title": "t", "payload": {"k": ["\\u0000"]}}', ["body", "payload"]),
        ('{"title": "t", "payload": {"k": NaN}}', ["body", "payload"]),
        ('{"title": "t", "payload": {"k": -Infinity}}', ["body", "payload"]),
    ],
)
async def test_what_postgresql_cannot_keep_gets_422_naming_the_field(
    api: httpx.AsyncClient, body: str, loc: list[str]
) -> None:
    response = await api.post(
        "/api/v1/tasks", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][:2] == loc
    assert await count_tasks(api) == 0


async def test_a_kind_filter_with_a_nul_gets_422(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/tasks", params={"kind": "a\x00"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "kind"]


async def test_a_schedule_past_the_calendar_in_utc_gets_422(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/tasks", json={"title": "t", "scheduled_at": "9999-12-31T23:59:00-01:00"}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "scheduled_at"]
    assert await count_tasks(api) == 0
