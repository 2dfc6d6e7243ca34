"""With API keys off, the API answers at loopback addresses and the names it is told it is
reached by (its Service's and ingress's in a cluster), and at no other Host."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from services.api.errors import RequestLimits
from services.core.settings import Settings


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _client(hosts: list[str] | None) -> httpx.AsyncClient:
    app = RequestLimits(_ok, body_bytes=1024, header_bytes=4096, hosts=hosts)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("conveyor-api", 200),
        ("conveyor-api.tasks.svc:8000", 200),
        ("Tasks.Example.COM", 200),
        ("localhost:8000", 200),
        ("[::1]:8000", 200),
        ("evil.example", 403),
        ("conveyor-api.evil.example", 403),
        ("10.0.0.7:8000", 403),
    ],
)
async def test_keys_off_answers_loopback_and_the_allowed_names_only(host: str, status: int) -> None:
    hosts = ["conveyor-api", "conveyor-api.tasks.svc", "tasks.example.com"]
    async with _client(hosts) as client:
        answer = await client.get("/api/v1/tasks", headers={"Host": host})
    assert answer.status_code == status
    if status == 403:
        assert answer.json()["type"] == "urn:conveyor:problem:loopback-only"


async def test_keys_on_answers_any_host() -> None:
    async with _client(None) as client:
        answer = await client.get("/api/v1/tasks", headers={"Host": "anything.example"})
    assert answer.status_code == 200


def test_the_setting_takes_a_comma_separated_list() -> None:
    settings = Settings(allowed_hosts="conveyor-api, conveyor-api.tasks.svc")  # type: ignore[arg-type]
    assert settings.allowed_hosts == ["conveyor-api", "conveyor-api.tasks.svc"]
