"""The rate limit's bucket, against a fake of its PostgreSQL table that counts statements."""

from __future__ import annotations

import time

import pytest

from services.api.auth import Authenticator, Rate
from services.api.errors import Refused
from services.core.auth import Principal, Scope
from services.core.settings import Settings

ALICE = Principal("team-a", frozenset({Scope.SUBMIT}), "k3v9x0m2q7ab")


class FakeLimits:
    """RateLimits' statement, in memory, by this process's clock."""

    def __init__(self) -> None:
        self.statements = 0
        self.spent_until: dict[str, float] = {}

    async def spend(self, key_id: str, seconds: float, slack: float) -> tuple[bool, float]:
        self.statements += 1
        now = time.monotonic()
        until = max(self.spent_until.get(key_id, now), now)
        if until - now > slack:
            return False, until - now
        self.spent_until[key_id] = until + seconds
        return True, until + seconds - now


def _auth(rate: str) -> tuple[Authenticator, FakeLimits]:
    limits = FakeLimits()
    settings = Settings(rate_limit=rate)  # type: ignore[call-arg]
    return Authenticator(None, settings, limits), limits  # type: ignore[arg-type]


async def test_a_key_over_its_limit_is_refused_without_a_statement() -> None:
    auth, limits = _auth("5/minute")
    for _ in range(5):
        await auth.spend(ALICE)
    for _ in range(100):
        with pytest.raises(Refused) as refused:
            await auth.spend(ALICE)
        assert refused.value.status == 429
        assert refused.value.headers == {"Retry-After": "12"}
    assert limits.statements == 5  # one per request that passed; none for the flood after


async def test_a_batch_larger_than_a_window_passes_on_a_full_bucket_and_is_owed() -> None:
    auth, limits = _auth("100/second")
    await auth.spend(ALICE, 1000)
    with pytest.raises(Refused) as refused:
        await auth.spend(ALICE)
    assert refused.value.headers == {"Retry-After": "10"}  # 9.01 s: 900 owed, then one
    assert limits.statements == 1


def test_a_rate_is_a_window_s_worth_at_once_refilled_evenly() -> None:
    rate = Rate.parse("100/second")
    assert (rate.burst, rate.interval, str(rate)) == (100, 0.01, "100 per 1 second")
    assert rate.slack(1) == pytest.approx(0.99) and rate.slack(100) == rate.slack(1000) == 0
