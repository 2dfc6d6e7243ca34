"""Keys: who gets in, what each scope allows, revocation, seeding, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from services.core.auth import new_key, parse_scopes
from services.core.db.keys import SeedKey, SqlKeyStore
from services.core.settings import Settings
from tests.security.conftest import ALL_SCOPES, Caller, write_seed
from tests.support.env import settings_env
from tests.support.services import running_api

TASK = f"/api/v1/tasks/{uuid.UUID(int=0)}"
SCHEDULE = f"/api/v1/schedules/{uuid.UUID(int=0)}"
# (method, path, scope it needs: "any" for any key); unknown ids are fine: the scope is
# checked first.
CALLS = [
    ("POST", "/api/v1/tasks", "submit"),
    ("GET", "/api/v1/tasks", "read"),
    ("GET", TASK, "read"),
    ("GET", f"{TASK}/status", "read"),
    ("DELETE", TASK, "cancel"),
    ("POST", f"{TASK}:retry", "submit"),
    ("POST", "/api/v1/tasks:cancel", "cancel"),
    ("POST", "/api/v1/tasks:retry", "submit"),
    ("GET", f"{TASK}/attempts", "read"),
    ("POST", "/api/v1/schedules", "submit"),
    ("GET", "/api/v1/schedules", "read"),
    ("GET", SCHEDULE, "read"),
    ("POST", f"{SCHEDULE}:pause", "submit"),
    ("POST", f"{SCHEDULE}:resume", "submit"),
    ("DELETE", SCHEDULE, "submit"),
    ("GET", "/api/v1/whoami", "any"),
    ("GET", "/api/v1/overview", "read"),
    ("GET", f"{TASK}/trace", "read"),
    ("GET", "/api/v1/keys", "admin"),
    ("POST", "/api/v1/keys", "admin"),
    ("DELETE", "/api/v1/keys/abcdefghijkl", "admin"),
    ("GET", "/api/v1/queues", "platform"),
    ("POST", "/api/v1/queues/default:pause", "platform"),
    ("POST", "/api/v1/queues/default:resume", "platform"),
    ("GET", "/api/v1/workers", "platform"),
]
BODIES = {
    "/api/v1/tasks": {"title": "t"},
    "/api/v1/keys": {"scopes": ["read"]},
    "/api/v1/tasks:cancel": {},
    "/api/v1/tasks:retry": {},
    "/api/v1/schedules": {"name": "hourly", "cron": "0 * * * *", "task": {"title": "t"}},
}


def _assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer  x y",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-key",
        "Bearer cvk_abcdefghijkl_" + "A" * 43,
        "Bearer cvk_ABC_def",
        "Token cvk_x",
    ],
)
async def test_requests_without_a_valid_key_get_401(
    api: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path, _ in CALLS:
        response = await api.request(method, path, headers=headers, json=BODIES.get(path))
        _assert_refused(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    assert (await api.get("/api/v1/tasks", headers=headers)).json()["detail"]


async def test_a_right_key_id_with_a_wrong_secret_gets_401(
    api: httpx.AsyncClient, caller: Callable[..., Awaitable[Caller]]
) -> None:
    real = await caller("alice")
    forged = real.key[:-5] + ("AAAAA" if not real.key.endswith("AAAAA") else "BBBBB")

    response = await api.get("/api/v1/tasks", headers={"Authorization": f"Bearer {forged}"})

    _assert_refused(response, 401)


@pytest.mark.parametrize("scope", ["submit", "read", "cancel"])
async def test_each_scope_opens_its_own_calls_only(
    caller: Callable[..., Awaitable[Caller]], scope: str
) -> None:
    who = await caller("alice", scope)
    for method, path, needs in CALLS:
        response = await who.request(method, path, json=BODIES.get(path))
        if needs in (scope, "any"):
            assert response.status_code in (201, 200, 404), (method, path, response.text)
        else:
            _assert_refused(response, 403)
            assert needs in response.json()["detail"]


async def test_admin_opens_every_call_of_its_tenant_and_no_platform_call(
    caller: Callable[..., Awaitable[Caller]],
) -> None:
    who = await caller("alice", "admin")
    for method, path, needs in CALLS:
        response = await who.request(method, path, json=BODIES.get(path))
        if needs == "platform":  # another tenant's work is not an admin's to stop
            _assert_refused(response, 403)
        else:
            assert response.status_code in (201, 200, 404), (method, path, response.text)


async def test_no_key_made_over_http_holds_the_platform_scope(
    caller: Callable[..., Awaitable[Caller]],
) -> None:
    admin = await caller("alice", "admin")
    response = await admin.request("POST", "/api/v1/keys", json={"scopes": ["read", "platform"]})
    _assert_refused(response, 422)
    assert response.json()["errors"][0]["loc"] == ["body", "scopes", 1]
    listed = (await admin.request("GET", "/api/v1/keys")).json()["items"]
    assert [key["scopes"] for key in listed] == [["admin"]]


async def test_a_revoked_key_gets_401_and_its_task_stays(
    caller: Callable[..., Awaitable[Caller]],
) -> None:
    admin = await caller("alice", ALL_SCOPES)
    made = await admin.request(
        "POST", "/api/v1/keys", json={"scopes": ["submit", "read"], "name": "ci"}
    )
    assert made.status_code == 201
    worker = Caller(admin.client, "alice", made.json()["key"])
    task = (await worker.request("POST", "/api/v1/tasks", json={"title": "t"})).json()

    revoked = await admin.request("DELETE", f"/api/v1/keys/{made.json()['id']}")

    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    _assert_refused(await worker.request("GET", "/api/v1/tasks"), 401)
    assert (await admin.request("GET", f"/api/v1/tasks/{task['id']}")).status_code == 200


async def test_keys_are_stored_as_digests_and_listed_without_secrets(
    caller: Callable[..., Awaitable[Caller]], settings: Settings
) -> None:
    admin = await caller("alice", "admin")
    secret = admin.key.split("_", 2)[2]

    listed = await admin.request("GET", "/api/v1/keys")
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        rows = await connection.fetch("SELECT * FROM api_keys")
    finally:
        await connection.close()

    assert secret not in listed.text
    assert rows and all(secret not in str(dict(row)) for row in rows)


async def test_seeded_keys_work_and_a_revoked_one_stays_revoked(
    secured: Settings, keys: SqlKeyStore, tmp_path: Path
) -> None:
    key = new_key()[0]
    seed = tmp_path / "keys.json"
    write_seed(seed, SeedKey(key=key, tenant="team-a", scopes=["read"]))
    seeded = secured.model_copy(update={"auth_seed_file": str(seed)})
    bearer = {"Authorization": f"Bearer {key}"}

    async with running_api(seeded) as client:
        assert (await client.get("/api/v1/tasks", headers=bearer)).status_code == 200
    await keys.revoke(key.split("_")[1])
    async with running_api(seeded) as client:
        assert (await client.get("/api/v1/tasks", headers=bearer)).status_code == 401


def test_a_bad_seed_file_stops_the_api_naming_the_entry(secured: Settings, tmp_path: Path) -> None:
    seed = tmp_path / "keys.json"
    seed.write_text('[{"key": "cvk_short", "tenant": "team-a", "scopes": ["read"]}]')
    env = settings_env(secured.model_copy(update={"auth_seed_file": str(seed), "api_port": 1}))

    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode != 0
    assert "0.key" in done.stderr and "pattern" in done.stderr


def _conveyor(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_cli_makes_lists_and_revokes_keys(
    api: httpx.AsyncClient, secured: Settings
) -> None:
    made = _conveyor(
        secured,
        "keys",
        "create",
        "--tenant",
        "team-b",
        "--scopes",
        "read,cancel",
        "--name",
        "dashboards",
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    bearer = {"Authorization": f"Bearer {key}"}
    assert (await api.get("/api/v1/tasks", headers=bearer)).status_code == 200

    listed = _conveyor(secured, "keys", "list", "--tenant", "team-b")
    revoked = _conveyor(secured, "keys", "revoke", key.split("_")[1])

    assert "dashboards" in listed.stdout and "cancel,read" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout
    assert revoked.returncode == 0, revoked.stderr
    assert (await api.get("/api/v1/tasks", headers=bearer)).status_code == 401
    refused = _conveyor(secured, "keys", "create", "--tenant", "team-b", "--scopes", "root")
    assert refused.returncode == 2 and "unknown scope" in refused.stderr


async def test_an_admin_makes_keys_up_to_the_tenants_limit(
    secured: Settings, keys: SqlKeyStore
) -> None:
    admin_key, _ = await keys.create("alice", parse_scopes("admin"))
    async with running_api(secured.model_copy(update={"max_keys_per_tenant": 3})) as api:
        admin = Caller(api, "alice", admin_key)
        made = [
            await admin.request("POST", "/api/v1/keys", json={"scopes": ["read"]}) for _ in range(3)
        ]
        revoked = await admin.request("DELETE", f"/api/v1/keys/{made[0].json()['id']}")
        again = await admin.request("POST", "/api/v1/keys", json={"scopes": ["read"]})

    assert [m.status_code for m in made] == [201, 201, 409]
    assert made[2].json()["type"] == "urn:conveyor:problem:too-many-keys"
    assert (revoked.status_code, again.status_code) == (200, 201)


async def test_the_cli_client_sends_the_key_from_its_environment(
    caller: Callable[..., Awaitable[Caller]],
) -> None:
    who = await caller("alice", "submit,read")
    env = {**os.environ, "CONVEYOR_API_URL": str(who.client.base_url).rstrip("/")}

    async def conveyor(*args: str, key: str | None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, **({"CONVEYOR_API_KEY": key} if key else {})},
        )
        out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()

    code, out, _ = await conveyor("submit", "from the CLI", "--kind", "noop", key=who.key)
    task = json.loads(out)
    refused, nothing, said = await conveyor("get", str(task["id"]), key=None)

    assert (code, task["title"]) == (0, "from the CLI")
    assert (refused, nothing) == (4, "")  # the API refused: one line on stderr
    assert said.startswith("conveyor: ") and "HTTP 401 unauthenticated" in said
