"""Fixtures for the API with keys switched on, and keys of two tenants to try it with."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.auth import Scope, parse_scopes
from services.core.db.keys import SeedKey, SqlKeyStore
from services.core.settings import Settings
from tests.support.services import running_api


@dataclass(frozen=True)
class Caller:
    """A client of the running API that sends one tenant's key with every request."""

    client: httpx.AsyncClient
    tenant: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.request(
            method, url, headers={**self.headers, **(headers or {})}, **kwargs
        )


@pytest.fixture
def secured(settings: Settings) -> Settings:
    """Settings with keys on; no caching of lookups, a limit no test reaches by accident,
    and no relay nor publish, so that tasks stay as they were submitted unless a test
    moves them."""
    return settings.model_copy(
        update={
            "auth_enabled": True,
            "auth_cache_seconds": 0.0,
            "rate_limit": "10000/second",
            "api_run_relay": False,
            "api_publish": False,
        }
    )


@pytest.fixture
async def api(secured: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real API with keys on, and a client that sends none of its own."""
    async with running_api(secured) as client:
        yield client


@pytest.fixture
def caller(api: httpx.AsyncClient, keys: SqlKeyStore) -> Callable[..., Awaitable[Caller]]:
    """caller(tenant, scopes): a Caller with a new key of `tenant` holding `scopes`."""

    async def make(tenant: str, scopes: str = "submit,read,cancel") -> Caller:
        key, _ = await keys.create(tenant, parse_scopes(scopes))
        return Caller(api, tenant, key)

    return make


ALL_SCOPES = ",".join(scope.value for scope in Scope)


def write_seed(path: Path, *entries: SeedKey) -> str:
    """A seed file at `path` holding `entries`; answers its path."""
    path.write_text(json.dumps([entry.model_dump(mode="json") for entry in entries]))
    return str(path)
