"""Reading tasks: one, its status, and listings with filters and cursors."""

from __future__ import annotations

import asyncio
import base64
import uuid

import httpx
import pytest

from tests.support.services import submit


def encode_cursor_at(created_at: str) -> str:
    """A cursor as the service makes them, for a position of the test's choosing."""
    raw = f"{created_at}|{uuid.UUID(int=0)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_get_and_status_of_a_task(api: httpx.AsyncClient) -> None:
    task = await submit(api, priority="HIGH")
    full = (await api.get(f"/api/v1/tasks/{task['id']}")).json()
    short = (await api.get(f"/api/v1/tasks/{task['id']}/status")).json()
    assert full["id"] == task["id"] and full["priority"] == "HIGH"
    assert set(short) == {"id", "status", "attempts", "updated_at", "cancel_requested"}
    assert short["id"] == task["id"]


@pytest.mark.parametrize("suffix", ["", "/status"])
async def test_an_unknown_task_is_404(api: httpx.AsyncClient, suffix: str) -> None:
    response = await api.get(f"/api/v1/tasks/{uuid.uuid4()}{suffix}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("path", ["/api/v1/tasks/nope", "/api/v1/tasks/nope/status"])
async def test_a_malformed_id_is_422(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 422
    assert ["path", "task_id"] in [e["loc"] for e in response.json()["errors"]]


async def test_list_filters(api: httpx.AsyncClient) -> None:
    high = await submit(api, priority="HIGH", kind="echo")
    low = await submit(api, priority="LOW", kind="noop")
    await api.delete(f"/api/v1/tasks/{low['id']}")
    medium = await submit(api, priority="MEDIUM", kind="noop")

    async def ids(**params: object) -> list[str]:
        response = await api.get("/api/v1/tasks", params=params)
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["items"]]

    assert await ids() == [medium["id"], low["id"], high["id"]]
    assert await ids(priority=["HIGH", "LOW"]) == [low["id"], high["id"]]
    assert await ids(kind="noop") == [medium["id"], low["id"]]
    assert await ids(status="CANCELLED") == [low["id"]]
    assert low["id"] not in await ids(status=["NEW", "PENDING"])
    created = (await api.get(f"/api/v1/tasks/{low['id']}")).json()["created_at"]
    assert await ids(created_after=created) == [medium["id"]]
    assert await ids(created_before=created) == [high["id"]]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"status": "DONE"}, ["query", "status", 0]),
        ({"priority": "URGENT"}, ["query", "priority", 0]),
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 101}, ["query", "limit"]),
        ({"cursor": "not-a-cursor"}, ["query", "cursor"]),
        ({"created_after": "yesterday"}, ["query", "created_after"]),
    ],
)
async def test_bad_list_queries_get_422(
    api: httpx.AsyncClient, params: dict[str, object], loc: list[object]
) -> None:
    response = await api.get("/api/v1/tasks", params=params)
    assert response.status_code == 422
    assert loc in [e["loc"] for e in response.json()["errors"]]


async def test_a_cursor_walk_sees_each_task_once_while_new_tasks_arrive(
    api: httpx.AsyncClient,
) -> None:
    before = {(await submit(api, title=f"old {n}"))["id"] for n in range(25)}
    seen: list[str] = []
    cursor = None
    arriving = []
    while True:
        params = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/api/v1/tasks", params=params)).json()
        seen.extend(t["id"] for t in page["items"])
        arriving.append(asyncio.create_task(submit(api, title="new")))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    new = {t["id"] for t in await asyncio.gather(*arriving)}
    assert len(seen) == len(set(seen)), "a task was visited twice"
    assert before <= set(seen), "a task was skipped"
    assert set(seen) - before <= new


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ({"created_after": "0001-01-01T00:00:00+01:00"}, ["query", "created_after"]),
        ({"created_before": "9999-12-31T23:59:00-01:00"}, ["query", "created_before"]),
        ({"cursor": encode_cursor_at("0001-01-01T00:00:00+01:00")}, ["query", "cursor"]),
    ],
)
async def test_times_that_leave_the_calendar_in_utc_get_422(
    api: httpx.AsyncClient, query: dict[str, str], loc: list[str]
) -> None:
    response = await api.get("/api/v1/tasks", params=query)

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][:2] == loc
