"""An attacker's requests: times at the ends of the calendar, numbers posing as times,
bodies made to multiply errors, and pages that grow with their payloads."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from services.core.db.engine import create_engine
from services.core.settings import Settings
from tests.support.services import submit

PAGE_BYTES = 1024 * 1024
SMALL_ANSWER = 20_000


@pytest.fixture
async def rows(settings: Settings) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """Count the stored tasks in SQL, without reading any of them back."""
    engine = create_engine(settings)

    async def count() -> int:
        async with engine.connect() as connection:
            return int(
                (await connection.execute(sa.text("SELECT count(*) FROM tasks"))).scalar_one()
            )

    yield count
    await engine.dispose()


def cursor_at(created_at: str) -> str:
    raw = f"{created_at}|{uuid.UUID(int=0)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def locs(response: httpx.Response) -> list[list[Any]]:
    return [error["loc"][:2] for error in response.json()["errors"]]


# --- 1/2: times PostgreSQL would keep as infinity ---------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        "9999-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00Z",
        "9999-12-30T23:59:59.000001Z",
        "0001-01-01T23:59:59.999999Z",
    ],
)
async def test_a_schedule_at_the_ends_of_time_gets_422_and_stores_nothing(
    api: httpx.AsyncClient, rows: Callable[[], Awaitable[int]], moment: str
) -> None:
    response = await api.post("/api/v1/tasks", json={"title": "t", "scheduled_at": moment})

    assert response.status_code == 422, response.text
    assert locs(response) == [["body", "scheduled_at"]]
    assert await rows() == 0


@pytest.mark.parametrize("moment", ["0001-01-02T00:00:00Z", "9999-12-30T23:59:59Z"])
async def test_a_schedule_just_inside_the_range_is_kept_and_read_back(
    api: httpx.AsyncClient, moment: str
) -> None:
    task = await submit(api, scheduled_at=moment)

    read = await api.get(f"/api/v1/tasks/{task['id']}")
    listed = await api.get("/api/v1/tasks")

    assert read.status_code == 200 and read.json()["scheduled_at"] == moment
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ({"created_after": "0001-01-01T00:00:00Z"}, ["query", "created_after"]),
        ({"created_before": "9999-12-31T23:59:59.999999Z"}, ["query", "created_before"]),
        ({"cursor": cursor_at("9999-12-31T23:59:59.999999+00:00")}, ["query", "cursor"]),
        ({"cursor": cursor_at("0001-01-01T00:00:00+00:00")}, ["query", "cursor"]),
    ],
)
async def test_list_times_at_the_ends_of_time_get_422_naming_the_field(
    api: httpx.AsyncClient, query: dict[str, str], loc: list[str]
) -> None:
    response = await api.get("/api/v1/tasks", params=query)

    assert response.status_code == 422, response.text
    assert locs(response) == [loc]


# --- 12: a timeout that ends at once, and numbers posing as times -----------------------


@pytest.mark.parametrize("seconds", [5e-324, 0.099])
async def test_a_timeout_under_a_tenth_of_a_second_gets_422(
    api: httpx.AsyncClient, rows: Callable[[], Awaitable[int]], seconds: float
) -> None:
    response = await api.post("/api/v1/tasks", json={"title": "t", "timeout_seconds": seconds})

    assert response.status_code == 422, response.text
    assert locs(response) == [["body", "timeout_seconds"]]
    assert await rows() == 0
    assert (await submit(api, timeout_seconds=0.1))["timeout_seconds"] == 0.1


@pytest.mark.parametrize("moment", [0.5, 1_700_000_000, "1700000000", "0.5", "2026-12-01"])
async def test_a_time_that_is_not_rfc_3339_gets_422_in_the_query_and_the_body(
    api: httpx.AsyncClient, rows: Callable[[], Awaitable[int]], moment: object
) -> None:
    after = await api.get("/api/v1/tasks", params={"created_after": moment})
    before = await api.get("/api/v1/tasks", params={"created_before": moment})
    body = await api.post("/api/v1/tasks", json={"title": "t", "scheduled_at": moment})

    assert (after.status_code, before.status_code, body.status_code) == (422, 422, 422)
    assert locs(after) == [["query", "created_after"]]
    assert locs(before) == [["query", "created_before"]]
    assert locs(body) == [["body", "scheduled_at"]]
    assert await rows() == 0


async def test_rfc_3339_times_with_an_offset_or_z_are_taken_and_documented(
    api: httpx.AsyncClient,
) -> None:
    task = await submit(api, scheduled_at="2999-12-01T10:00:00+02:00")
    listed = await api.get(
        "/api/v1/tasks",
        params={
            "created_after": "2000-01-01T00:00:00Z",
            "created_before": "2999-01-01T00:00:00-05:00",
        },
    )
    document = (await api.get("/openapi.json")).json()
    parameters = document["paths"]["/api/v1/tasks"]["get"]["parameters"]
    scheduled = document["components"]["schemas"]["TaskCreate"]["properties"]["scheduled_at"]

    assert task["scheduled_at"] == "2999-12-01T08:00:00Z"
    assert [t["id"] for t in listed.json()["items"]] == [task["id"]]
    for schema in [scheduled] + [p["schema"] for p in parameters if p["name"].startswith("cr")]:
        assert {"type": "string", "format": "date-time"} in schema["anyOf"]


# --- 3: bodies made to multiply errors --------------------------------------------------


def _small_problem(response: httpx.Response, status: int, loc: list[str]) -> dict[str, Any]:
    assert response.status_code == status, response.text[:1000]
    assert len(response.content) < SMALL_ANSWER, len(response.content)
    problem: dict[str, Any] = response.json()
    assert problem["errors"][0]["loc"][: len(loc)] == loc
    assert len(problem["errors"]) <= 20
    return problem


def _bad_items(count: int) -> str:
    """A body whose payload is a list of `count` strings PostgreSQL cannot keep."""
    return '{"title": "t", "payload": {"items": [' + ",".join(['"\\u0000"'] * count) + "]}}"


@pytest.mark.parametrize(("count", "status"), [(100_000, 413), (7_000, 422)])
async def test_a_payload_of_bad_items_gets_one_small_error_naming_payload(
    api: httpx.AsyncClient, rows: Callable[[], Awaitable[int]], count: int, status: int
) -> None:
    # 900 KB (over the payload limit, found first) and 63 KB: one error either way.
    response = await api.post(
        "/api/v1/tasks", content=_bad_items(count), headers={"Content-Type": "application/json"}
    )

    problem = _small_problem(response, status, ["body", "payload"])
    assert len(problem["errors"]) == 1 and "more_errors" not in problem
    assert await rows() == 0


async def test_a_body_of_900_kb_of_unknown_fields_gets_one_small_error(
    api: httpx.AsyncClient, rows: Callable[[], Awaitable[int]]
) -> None:
    body = {"title": "t"} | {f"f{n}": 0 for n in range(90_000)}

    response = await api.post("/api/v1/tasks", json=body)

    problem = _small_problem(response, 422, ["body"])
    assert problem["errors"] == [
        {"loc": ["body"], "msg": "Value error, 90001 fields, of which at most 9 are known"}
    ]
    assert await rows() == 0


async def test_errors_past_the_twentieth_are_counted_not_listed(
    api: httpx.AsyncClient, rows: Callable[[], Awaitable[int]]
) -> None:
    wrong = {
        "title": "",
        "description": 1,
        "priority": "URGENT",
        "kind": "",
        "payload": [],
        "max_attempts": 0,
        "timeout_seconds": 0,
        "scheduled_at": "soon",
    }
    body = wrong | {f"unknown{n}": 0 for n in range(20)}

    response = await api.post("/api/v1/tasks", json=body)

    problem = _small_problem(response, 422, ["body", "title"])
    assert len(problem["errors"]) == 20 and problem["more_errors"] == 8
    assert problem["detail"].endswith("; and 8 more errors")
    assert problem["detail"].count("; ") == 20
    assert await rows() == 0


async def test_a_field_named_by_a_huge_key_is_named_briefly(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/tasks", json={"title": "t", "k" * 500_000: 1})

    problem = _small_problem(response, 422, ["body"])
    assert problem["errors"][0]["loc"] == ["body", "k" * 100 + "…"]


async def test_a_key_with_140_000_bad_scopes_gets_one_small_error(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/api/v1/keys", json={"scopes": ["nope"] * 140_000})

    problem = _small_problem(response, 422, ["body", "scopes"])
    assert len(problem["errors"]) == 1


async def test_a_list_query_repeating_a_bad_status_gets_one_small_error(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/api/v1/tasks", params={"status": ["DONE"] * 1500})

    problem = _small_problem(response, 422, ["query", "status"])
    assert len(problem["errors"]) == 1


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb"])
async def test_a_lone_surrogate_gets_422_naming_the_field(
    api: httpx.AsyncClient, rows: Callable[[], Awaitable[int]], text: str
) -> None:
    escaped = json.dumps(text)  # ASCII escapes: the body itself is valid UTF-8
    for body, loc in [
        ('{"title": "t", "payload": {"k": ' + escaped + "}}", ["body", "payload"]),
        ('{"title": "t", "payload": {' + escaped + ": 1}}", ["body", "payload"]),
        ('{"title": ' + escaped + "}", ["body", "title"]),
        ('{"title": "t", "description": ' + escaped + "}", ["body", "description"]),
    ]:
        response = await api.post(
            "/api/v1/tasks", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, (body, response.text)
        assert locs(response) == [loc]
    assert await rows() == 0


# --- 7: the payload's size in UTF-8 -----------------------------------------------------


async def test_a_payload_of_36_kb_of_cjk_text_is_taken(api: httpx.AsyncClient) -> None:
    text = "漢字" * 6_000  # 36,000 bytes of UTF-8; 72,000 once escaped to ASCII

    task = await submit(api, kind="echo", payload={"text": text})
    over = await api.post("/api/v1/tasks", json={"title": "t", "payload": {"t": "漢" * 22_000}})

    assert task["payload"] == {"text": text}
    assert over.status_code == 413
    assert locs(over) == [["body", "payload"]]


# --- 4: pages bounded in bytes ----------------------------------------------------------


async def test_a_page_stays_under_1_mib_and_a_walk_still_sees_every_task_once(
    api: httpx.AsyncClient,
) -> None:
    blob = "x" * 60_000
    stored = {(await submit(api, kind="echo", payload={"blob": blob}))["id"] for _ in range(40)}
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        response = await api.get("/api/v1/tasks", params=params)
        assert response.status_code == 200, response.text
        sizes.append(len(response.content))
        seen.extend(t["id"] for t in response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break

    assert max(sizes) <= PAGE_BYTES
    assert len(sizes) >= 3
    assert len(seen) == len(set(seen)) and set(seen) == stored
