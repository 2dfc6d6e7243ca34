"""Who is asking: API keys, their scopes, a rate limit per key, and a line per tenant.

A key's lookup is trusted for AUTH_CACHE_SECONDS and never longer: past it the key is looked
up again before its next use, so a revocation reaches every process within that time. A key
id is looked up at most once at a time: concurrent requests with it share the one query, and
its answer or its error. Lookups of ids not seen before count against AUTH_LOOKUP_LIMIT,
which is there for floods of made-up ids; a key known to exist is looked up again past it
(the known keys are bounded, so these are), so a key in use never gets 503 as its entry ages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from services.api.deps import ServicesDep
from services.api.errors import Refused
from services.api.problems import ProblemType
from services.api.schemas import BATCH_LIMIT
from services.core.auth import DEFAULT_TENANT, ApiKey, Principal, Scope, matches, parse_key
from services.core.db.keys import SqlKeyStore
from services.core.db.limits import RateLimits
from services.core.settings import Settings
from services.core.telemetry.metrics import AUTH_REFUSALS

# Lookups remembered at most, of known keys and of unknown ids each.
CACHE_ENTRIES = 10_000
# A request waits this long at most in its tenant's line, and finds at most this many ahead.
LINE_WAIT_SECONDS = 2.0
LINE_LENGTH = 100
_bearer = HTTPBearer(auto_error=False, description="An API key: `cvk_<id>_<secret>`")
_EVERYTHING = Principal(DEFAULT_TENANT, frozenset(Scope))

Found = tuple[ApiKey, str]


class Authenticator:
    """Turns a bearer key into a Principal: checked against its stored digest, rate-limited."""

    def __init__(
        self, keys: SqlKeyStore, settings: Settings, limits: RateLimits | None = None
    ) -> None:
        self._keys = keys
        self._enabled = settings.auth_enabled
        self._cache_seconds = settings.auth_cache_seconds
        # Known keys and unknown ids apart, so that a flood of made-up ids cannot evict
        # the keys in use; each is emptied when full. A known key's entry stays past its
        # time (not trusted, only recognised) until it is looked up again.
        self._known: dict[str, tuple[float, Found]] = {}
        self._unknown: dict[str, float] = {}
        self._flights: dict[str, asyncio.Task[Found | None]] = {}
        self._rate = Rate.parse(settings.rate_limit) if settings.rate_limit else None
        if self._rate is not None and self._enabled and limits is None:
            raise ValueError("a rate limit needs its table in PostgreSQL (RateLimits)")
        self._limits = limits
        # Each key's spending as this process last saw it: (monotonic time, seconds ahead).
        # Others only move it further, so a request it shows cannot pass is refused here,
        # without a statement: a flood of one key costs PostgreSQL nothing past its 429.
        self._ahead: dict[str, tuple[float, float]] = {}
        self._lookups = parse(settings.auth_lookup_limit) if settings.auth_lookup_limit else None
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self.lines = TenantLines(settings.tenant_max_requests)

    async def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        """The principal of a request; Refused (401, 503) without one."""
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
        return Principal(key.tenant, key.scopes, key.id)

    async def spend(self, principal: Principal, cost: int = 1) -> None:
        """Count a request as `cost` requests against its key's rate limit, across every
        API process (one statement); Refused 429, spending nothing, when it does not fit."""
        key_id, rate = principal.key_id, self._rate
        if rate is None or self._limits is None or key_id is None:
            return
        now = time.monotonic()
        seen = self._ahead.get(key_id)
        wait = seen[1] - (now - seen[0]) - rate.slack(cost) if seen is not None else 0.0
        if wait <= 0:
            spent, ahead = await self._limits.spend(key_id, cost * rate.interval, rate.slack(cost))
            _remember(self._ahead, key_id, (now, ahead))
            if spent:
                return
            wait = ahead - rate.slack(cost)
        AUTH_REFUSALS.labels("rate_limited").inc()
        # Whole seconds, never less than the wait (a concurrent request of the key may have
        # moved its spending since the statement read it: then at least 1 s).
        seconds = max(1, math.ceil(wait))
        raise Refused(
            429,
            ProblemType.RATE_LIMITED,
            f"over {rate} for this key; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )

    def forget(self, key_id: str) -> None:
        """Look `key_id` up again on its next use (it was just revoked here); a lookup under
        way from before is answered to its waiters but not remembered."""
        self._known.pop(key_id, None)
        self._flights.pop(key_id, None)

    async def _find(self, key_id: str) -> Found | None:
        now = time.monotonic()
        known = self._known.get(key_id)
        if known is not None and known[0] > now:
            return known[1]
        if self._unknown.get(key_id, 0.0) > now:
            return None
        # Shielded: a waiter that goes away must not cancel the others' lookup.
        return await asyncio.shield(self._flight(key_id, known=known is not None))

    def _flight(self, key_id: str, *, known: bool) -> asyncio.Task[Found | None]:
        """The lookup of `key_id` under way, or a new one."""
        flight = self._flights.get(key_id)
        if flight is None:
            flight = asyncio.create_task(self._look_up(key_id, known=known))
            self._flights[key_id] = flight
            flight.add_done_callback(functools.partial(self._landed, key_id))
        return flight

    def _landed(self, key_id: str, flight: asyncio.Task[Found | None]) -> None:
        if self._flights.get(key_id) is flight:
            del self._flights[key_id]
        if not flight.cancelled():
            flight.exception()  # its waiters may all have gone: not an unretrieved error

    async def _look_up(self, key_id: str, *, known: bool) -> Found | None:
        started = time.monotonic()  # the entry's time runs from before the query
        if not known:
            await self._check_lookup_limit()
        found = await self._keys.find(key_id)
        if self._flights.get(key_id) is asyncio.current_task():  # else forgotten meanwhile
            self._remember(key_id, found, started + self._cache_seconds)
        return found

    def _remember(self, key_id: str, found: Found | None, until: float) -> None:
        if found is None:
            self._known.pop(key_id, None)
            _remember(self._unknown, key_id, until)
        else:
            _remember(self._known, key_id, (until, found))

    async def _check_lookup_limit(self) -> None:
        if self._lookups is None or await self._limiter.hit(self._lookups, "lookups"):
            return
        AUTH_REFUSALS.labels("lookup_limited").inc()
        raise Refused(
            503,
            ProblemType.AUTH_BUSY,
            "too many keys to look up at once; retry shortly",
            headers={"Retry-After": "1"},
        )


@dataclass(frozen=True, slots=True)
class Rate:
    """RATE_LIMIT as a bucket: `burst` requests at once (a window's worth), refilled one
    every `interval` seconds.

    A request costing `cost` (a batch: one per task) passes when the bucket holds
    min(cost, burst): a batch larger than a window passes once the bucket is full, and
    leaves the key owing the rest, which the following requests wait for. So a key gets
    no more than its rate over time whatever the sizes of its batches, any batch passes
    once its wait is over, and a refused request spends nothing.
    """

    burst: int
    interval: float
    text: str

    @classmethod
    def parse(cls, text: str) -> Rate:
        item = parse(text)
        return cls(item.amount, item.get_expiry() / item.amount, str(item))

    def __str__(self) -> str:
        return self.text

    def slack(self, cost: int) -> float:
        """How far ahead of now a key's spending may run for a request costing `cost` to
        pass (0: the bucket must be full); a key's spending runs `interval` per request."""
        return (self.burst - min(cost, self.burst)) * self.interval


def _remember(cache: dict[str, Any], key_id: str, entry: Any) -> None:
    if key_id not in cache and len(cache) >= CACHE_ENTRIES:
        cache.clear()
    cache[key_id] = entry


def _unauthenticated(reason: str, detail: str) -> Refused:
    AUTH_REFUSALS.labels(reason).inc()
    return Refused(401, ProblemType.UNAUTHENTICATED, detail, headers={"WWW-Authenticate": "Bearer"})


@dataclass(slots=True)
class _Line:
    slots: asyncio.Semaphore
    waiting: int = 0
    present: int = field(default=0)  # waiting or holding a slot


class TenantLines:
    """At most `limit` requests of one tenant at once in this process; the rest wait in the
    tenant's own line, first come first served, so one tenant's flood cannot make another
    tenant wait. A request that finds LINE_LENGTH ahead of it, or waits LINE_WAIT_SECONDS,
    gets 503 + Retry-After. A line is dropped once idle, so the lines are as many as the
    tenants with requests in this process, never more."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lines: dict[str, _Line] = {}

    @contextlib.asynccontextmanager
    async def admit(self, tenant: str) -> AsyncIterator[None]:
        """Hold one of `tenant`'s places for the block, after waiting in its line."""
        line = self._lines.get(tenant)
        if line is None:
            line = self._lines[tenant] = _Line(asyncio.Semaphore(self._limit))
        line.present += 1
        try:
            await _wait_turn(line)
            try:
                yield
            finally:
                line.slots.release()
        finally:
            line.present -= 1
            if line.present == 0:
                del self._lines[tenant]

    @contextlib.asynccontextmanager
    async def stepped_out(self, tenant: str) -> AsyncIterator[None]:
        """Give up the place a request of `tenant` holds for the block (a request that only
        waits, holding no connection), and take one again after it, in line."""
        line = self._lines.get(tenant)
        if line is None:
            yield
            return
        line.slots.release()
        try:
            yield
        finally:
            # Shielded: a request cancelled here still ends holding a place, as admit()
            # expects when it gives the place back.
            await asyncio.shield(line.slots.acquire())

    def __len__(self) -> int:
        return len(self._lines)


async def _wait_turn(line: _Line) -> None:
    if line.waiting >= LINE_LENGTH:
        raise _tenant_busy()
    line.waiting += 1
    try:
        async with asyncio.timeout(LINE_WAIT_SECONDS):
            await line.slots.acquire()
    except TimeoutError:
        raise _tenant_busy() from None
    finally:
        line.waiting -= 1


def _tenant_busy() -> Refused:
    AUTH_REFUSALS.labels("tenant_busy").inc()
    return Refused(
        503,
        ProblemType.TENANT_BUSY,
        "too many requests of this tenant at once; retry shortly",
        headers={"Retry-After": "1"},
    )


async def _tasks_sent(request: Request) -> int:
    """How many tasks a batch's body holds (1 for a body that is not a batch: it is refused
    whole). FastAPI has read the body already: request.json() answers it again."""
    try:
        tasks = (await request.json()).get("tasks")
    except (ValueError, AttributeError):
        return 1
    return len(tasks) if isinstance(tasks, list) and 0 < len(tasks) <= BATCH_LIMIT else 1


@contextlib.asynccontextmanager
async def admitted(
    services: ServicesDep,
    credentials: HTTPAuthorizationCredentials | None,
    scope: Scope | None,
    cost: int = 1,
) -> AsyncIterator[Principal]:
    """The request's Principal (401, 403, 429 or 503 otherwise), holding one of its
    tenant's places for the block; `scope` None takes any key, and the request counts
    `cost` times against the key's rate limit."""
    found = await services.auth.authenticate(credentials)
    if scope is not None and not found.may(scope):
        AUTH_REFUSALS.labels("forbidden").inc()
        raise Refused(403, ProblemType.FORBIDDEN, f"this API key lacks the {scope.value!r} scope")
    async with services.auth.lines.admit(found.tenant):
        # Metered in line: a tenant's flood reaches PostgreSQL's limit table no faster
        # than its places in line let it.
        await services.auth.spend(found, cost)
        yield found


async def bearer(request: Request) -> HTTPAuthorizationCredentials | None:
    """The request's bearer key, if it sends one."""
    return await _bearer(request)


def authorize(scope: Scope | None, *, per_task: bool = False) -> object:
    """A dependency answering the request's Principal (see `admitted`), and holding one of
    its tenant's places while the route runs. With `per_task`, the request counts against
    the rate limit as many times as its body holds tasks (a batch)."""

    async def principal(
        request: Request,
        services: ServicesDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> AsyncIterator[Principal]:
        cost = await _tasks_sent(request) if per_task else 1
        async with admitted(services, credentials, scope, cost) as found:
            yield found

    # "function": the place is given back once the answer is made, not after a slow client
    # has read it.
    return Depends(principal, scope="function")


Anyone = Annotated[Principal, authorize(None)]
Submitter = Annotated[Principal, authorize(Scope.SUBMIT)]
BatchSubmitter = Annotated[Principal, authorize(Scope.SUBMIT, per_task=True)]
Reader = Annotated[Principal, authorize(Scope.READ)]
Canceller = Annotated[Principal, authorize(Scope.CANCEL)]
Admin = Annotated[Principal, authorize(Scope.ADMIN)]
Platform = Annotated[Principal, authorize(Scope.PLATFORM)]
