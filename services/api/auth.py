"""Who is asking: API keys, their scopes, and a rate limit per key."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from services.api.deps import ServicesDep
from services.api.errors import Refused
from services.core.auth import DEFAULT_TENANT, ApiKey, Principal, Scope, matches, parse_key
from services.core.db.keys import SqlKeyStore
from services.core.settings import Settings
from services.core.telemetry.metrics import AUTH_REFUSALS

# Lookups remembered at most, of known keys and of unknown ids each.
CACHE_ENTRIES = 10_000
_bearer = HTTPBearer(auto_error=False, description="An API key: `cvk_<id>_<secret>`")
_EVERYTHING = Principal(DEFAULT_TENANT, frozenset(Scope))


class Authenticator:
    """Turns a bearer key into a Principal: checked against its stored digest, rate-limited."""

    def __init__(self, keys: SqlKeyStore, settings: Settings) -> None:
        self._keys = keys
        self._enabled = settings.auth_enabled
        self._cache_seconds = settings.auth_cache_seconds
        # Known keys and unknown ids apart, so that a flood of made-up ids cannot evict
        # the keys in use; each is emptied when full.
        self._known: dict[str, tuple[float, tuple[ApiKey, str]]] = {}
        self._unknown: dict[str, float] = {}
        self._rate = parse(settings.rate_limit) if settings.rate_limit else None
        self._lookups = parse(settings.auth_lookup_limit) if settings.auth_lookup_limit else None
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    async def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        """The principal of a request; Refused (401, 429) when it has none or asks too often."""
        if not self._enabled:
            return _EVERYTHING
        if credentials is None:
            raise _unauthenticated("missing", "send an API key as 'Authorization: Bearer <key>'")
        material = parse_key(credentials.credentials)
        found = await self._find(material.key_id) if material is not None else None
        if material is None or found is None or not matches(material, found[1]):
            raise _unauthenticated("invalid", "the API key is not valid")
        key = found[0]
        if key.revoked_at is not None:
            raise _unauthenticated("revoked", "the API key was revoked")
        await self._spend(key.id)
        return Principal(key.tenant, key.scopes, key.id)

    def forget(self, key_id: str) -> None:
        """Look `key_id` up again on its next use (it was just revoked here)."""
        self._known.pop(key_id, None)

    async def _find(self, key_id: str) -> tuple[ApiKey, str] | None:
        now = time.monotonic()
        known = self._known.get(key_id)
        if known is not None and known[0] > now:
            return known[1]
        if self._unknown.get(key_id, 0.0) > now:
            return None
        if self._lookups is not None and not await self._limiter.hit(self._lookups, "lookups"):
            AUTH_REFUSALS.labels("lookup_limited").inc()
            raise Refused(503, "auth-busy", "too many keys to look up at once; retry shortly",
                          headers={"Retry-After": "1"})
        found = await self._keys.find(key_id)
        until = now + self._cache_seconds
        if found is None:
            _remember(self._unknown, key_id, until)
        else:
            _remember(self._known, key_id, (until, found))
        return found

    async def _spend(self, key_id: str) -> None:
        if self._rate is None or await self._limiter.hit(self._rate, key_id):
            return
        AUTH_REFUSALS.labels("rate_limited").inc()
        reset_at, _ = await self._limiter.get_window_stats(self._rate, key_id)
        wait = max(1, math.ceil(reset_at - time.time()))
        raise Refused(429, "rate-limited", f"over {self._rate} for this key; retry in {wait} s",
                      headers={"Retry-After": str(wait)})


def _remember(cache: dict[str, Any], key_id: str, entry: Any) -> None:
    if len(cache) >= CACHE_ENTRIES:
        cache.clear()
    cache[key_id] = entry


def _unauthenticated(reason: str, detail: str) -> Refused:
    AUTH_REFUSALS.labels(reason).inc()
    return Refused(401, "unauthenticated", detail, headers={"WWW-Authenticate": "Bearer"})


def authorize(scope: Scope) -> object:
    """A dependency answering the request's Principal; 401, 403 or 429 otherwise."""

    async def principal(
        services: ServicesDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        found = await services.auth.authenticate(credentials)
        if not found.may(scope):
            AUTH_REFUSALS.labels("forbidden").inc()
            raise Refused(403, "forbidden", f"this API key lacks the {scope.value!r} scope")
        return found

    return Depends(principal)


Submitter = Annotated[Principal, authorize(Scope.SUBMIT)]
Reader = Annotated[Principal, authorize(Scope.READ)]
Canceller = Annotated[Principal, authorize(Scope.CANCEL)]
Admin = Annotated[Principal, authorize(Scope.ADMIN)]
