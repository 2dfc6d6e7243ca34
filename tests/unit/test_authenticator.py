"""The Authenticator's lookup cache, against a fake key store that counts lookups."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.security import HTTPAuthorizationCredentials

from services.api.auth import CACHE_ENTRIES, Authenticator
from services.api.errors import Refused
from services.core.auth import ApiKey, KeyMaterial, Scope, new_key
from services.core.settings import Settings


class FakeKeyStore:
    def __init__(self, material: KeyMaterial) -> None:
        self.key = ApiKey(
            material.key_id, "team-a", "", frozenset({Scope.READ}), datetime.now(UTC), None
        )
        self.digest = material.digest
        self.lookups = 0

    async def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        self.lookups += 1
        return (self.key, self.digest) if key_id == self.key.id else None


def _settings(**overrides: object) -> Settings:
    return Settings(**{"auth_cache_seconds": 60, "rate_limit": "", **overrides})  # type: ignore[arg-type]


def _bearer(key: str) -> HTTPAuthorizationCredentials:
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)


@pytest.fixture
def keys() -> tuple[str, FakeKeyStore]:
    key, material = new_key()
    return key, FakeKeyStore(material)


async def test_a_flood_of_unknown_ids_does_not_evict_the_keys_in_use(
    keys: tuple[str, FakeKeyStore],
) -> None:
    key, store = keys
    auth = Authenticator(store, _settings(auth_lookup_limit=""))  # type: ignore[arg-type]
    assert (await auth.authenticate(_bearer(key))).tenant == "team-a"

    for n in range(CACHE_ENTRIES + 1):
        with pytest.raises(Refused):
            await auth.authenticate(_bearer(f"cvk_{n:012d}_{'A' * 43}"))
    looked_up = store.lookups
    await auth.authenticate(_bearer(key))

    assert store.lookups == looked_up


async def test_forgetting_a_key_looks_it_up_again(keys: tuple[str, FakeKeyStore]) -> None:
    key, store = keys
    auth = Authenticator(store, _settings())  # type: ignore[arg-type]
    await auth.authenticate(_bearer(key))
    await auth.authenticate(_bearer(key))
    assert store.lookups == 1

    auth.forget(store.key.id)
    await auth.authenticate(_bearer(key))

    assert store.lookups == 2


async def test_lookups_past_their_limit_get_503_while_cached_keys_go_on(
    keys: tuple[str, FakeKeyStore],
) -> None:
    key, store = keys
    auth = Authenticator(store, _settings(auth_lookup_limit="3/minute"))  # type: ignore[arg-type]
    await auth.authenticate(_bearer(key))
    for n in range(2):
        with pytest.raises(Refused) as refused:
            await auth.authenticate(_bearer(f"cvk_{n:012d}_{'A' * 43}"))
        assert refused.value.status == 401

    with pytest.raises(Refused) as busy:
        await auth.authenticate(_bearer(f"cvk_{9:012d}_{'A' * 43}"))

    assert (busy.value.status, busy.value.headers) == (503, {"Retry-After": "1"})
    assert store.lookups == 3
    assert (await auth.authenticate(_bearer(key))).tenant == "team-a"
