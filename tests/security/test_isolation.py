"""Two tenants on one installation: neither can read, cancel, count or reuse the other's."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from services.core.db.store import SqlTaskStore
from tests.security.conftest import ALL_SCOPES, Caller


@pytest.fixture
async def alice(caller: Callable[..., Awaitable[Caller]]) -> Caller:
    return await caller("alice", ALL_SCOPES)


@pytest.fixture
async def bob(caller: Callable[..., Awaitable[Caller]]) -> Caller:
    return await caller("bob", ALL_SCOPES)


async def _submit(who: Caller, **fields: Any) -> dict[str, Any]:
    response = await who.request("POST", "/api/v1/tasks", json={"title": "t", **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _same_as_unknown(found: dict[str, Any], unknown: dict[str, Any], task_id: str) -> bool:
    """A foreign task's 404 says exactly what an unknown id's does, but for the id."""
    return found == {**unknown, "detail": unknown["detail"].replace(str(uuid.UUID(int=0)), task_id)}


@pytest.mark.parametrize("call", [("GET", ""), ("GET", "/status"), ("DELETE", "")])
async def test_another_tenants_task_answers_404_like_an_unknown_id(
    alice: Caller, bob: Caller, call: tuple[str, str], store: SqlTaskStore
) -> None:
    method, suffix = call
    task = await _submit(alice)
    before = await store.get(uuid.UUID(task["id"]))

    foreign = await bob.request(method, f"/api/v1/tasks/{task['id']}{suffix}")
    unknown = await bob.request(method, f"/api/v1/tasks/{uuid.UUID(int=0)}{suffix}")

    assert foreign.status_code == unknown.status_code == 404
    assert foreign.headers["content-type"] == "application/problem+json"
    assert _same_as_unknown(foreign.json(), unknown.json(), task["id"])
    assert await store.get(uuid.UUID(task["id"])) == before


async def test_a_running_task_of_another_tenant_cannot_be_asked_to_stop(
    alice: Caller, bob: Caller, store: SqlTaskStore
) -> None:
    task = await _submit(alice)
    task_id = uuid.UUID(task["id"])
    await store.confirm_queued(list(await store.reserve_due(10)))
    assert await store.claim_named("w", 30, task_id) is not None

    response = await bob.request("DELETE", f"/api/v1/tasks/{task_id}")

    assert response.status_code == 404
    running = await store.get(task_id)
    assert (running.status, running.cancel_requested) == ("IN_PROGRESS", False)
    assert (await alice.request("DELETE", f"/api/v1/tasks/{task_id}")).status_code == 202


async def test_listings_show_and_count_only_the_callers_tasks(alice: Caller, bob: Caller) -> None:
    mine = {(await _submit(alice, priority="HIGH"))["id"] for _ in range(3)}
    theirs = (await _submit(bob, priority="HIGH"))["id"]

    for query in ({}, {"priority": "HIGH"}, {"status": ["NEW", "PENDING"]}, {"kind": "demo"}):
        seen_by_alice = await alice.request("GET", "/api/v1/tasks", params=query)
        seen_by_bob = await bob.request("GET", "/api/v1/tasks", params=query)
        assert {t["id"] for t in seen_by_alice.json()["items"]} == mine
        assert [t["id"] for t in seen_by_bob.json()["items"]] == [theirs]


async def test_bulk_actions_touch_only_the_callers_tasks(
    alice: Caller, bob: Caller, store: SqlTaskStore
) -> None:
    mine = [(await _submit(alice))["id"] for _ in range(3)]
    theirs = (await _submit(bob))["id"]
    answer = await bob.request("POST", "/api/v1/tasks:cancel", json={})
    assert answer.json()["changed"] == 1
    for task_id in mine:
        assert (await store.get(uuid.UUID(task_id))).status == "NEW"
    retried = await alice.request("POST", "/api/v1/tasks:retry", json={})
    assert retried.json()["changed"] == 0  # bob's cancelled task is not alice's to run
    assert (await store.get(uuid.UUID(theirs))).status == "CANCELLED"


async def test_a_cursor_of_another_tenant_walks_only_the_callers_tasks(
    alice: Caller, bob: Caller
) -> None:
    mine = (await _submit(bob))["id"]
    for _ in range(3):
        await _submit(alice)
    cursor = (await alice.request("GET", "/api/v1/tasks", params={"limit": 1})).json()

    page = await bob.request(
        "GET", "/api/v1/tasks", params={"cursor": cursor["next_cursor"], "limit": 100}
    )

    # A cursor is only a position: from alice's, bob walks on to his own older task.
    assert page.status_code == 200
    assert [t["id"] for t in page.json()["items"]] == [mine]


async def test_idempotency_keys_belong_to_their_tenant(alice: Caller, bob: Caller) -> None:
    key = {"Idempotency-Key": "nightly-report"}
    first = await alice.request("POST", "/api/v1/tasks", json={"title": "t"}, headers=key)

    # The same key and body from another tenant is that tenant's own first use of the key.
    same = await bob.request("POST", "/api/v1/tasks", json={"title": "t"}, headers=key)
    repeat = await alice.request("POST", "/api/v1/tasks", json={"title": "t"}, headers=key)

    assert (first.status_code, same.status_code, repeat.status_code) == (201, 201, 200)
    assert same.json()["id"] != first.json()["id"] == repeat.json()["id"]
    listed = await alice.request("GET", "/api/v1/tasks")
    assert [t["id"] for t in listed.json()["items"]] == [first.json()["id"]]


async def test_a_tenants_admin_cannot_see_or_revoke_another_tenants_keys(
    alice: Caller, bob: Caller
) -> None:
    alice_key_id = alice.key.split("_")[1]

    listed = await bob.request("GET", "/api/v1/keys")
    revoked = await bob.request("DELETE", f"/api/v1/keys/{alice_key_id}")

    assert {key["tenant"] for key in listed.json()["items"]} == {"bob"}
    assert revoked.status_code == 404
    assert (await alice.request("GET", "/api/v1/tasks")).status_code == 200


async def test_another_tenants_schedule_cannot_be_read_paused_or_deleted(
    alice: Caller, bob: Caller
) -> None:
    body = {"name": "nightly", "cron": "0 3 * * *", "task": {"title": "t"}}
    made = await alice.request("POST", "/api/v1/schedules", json=body)
    assert made.status_code == 201, made.text
    theirs = await bob.request("POST", "/api/v1/schedules", json=body)  # names are per tenant
    assert theirs.status_code == 201, theirs.text
    path = f"/api/v1/schedules/{made.json()['id']}"
    for method, suffix in [("GET", ""), ("POST", ":pause"), ("POST", ":resume"), ("DELETE", "")]:
        answer = await bob.request(method, path + suffix)
        assert answer.status_code == 404, (method, suffix, answer.text)
    listed = (await bob.request("GET", "/api/v1/schedules")).json()["items"]
    assert [s["id"] for s in listed] == [theirs.json()["id"]]
    assert (await alice.request("GET", path)).json() == made.json()
