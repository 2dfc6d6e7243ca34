"""API keys' rate limits in PostgreSQL, so that a key's limit holds across every API
process: one statement per request, on a small UNLOGGED table (migration 0010)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.core.db.engine import connect

# Spend `seconds` of the key's time when its spending runs at most `slack` seconds past now
# (the first use of a key finds nothing spent). Answers how far past now the key's spending
# runs once spent (null: not spent), and how far it ran before this statement (null for a
# key not seen before). A concurrent request of the same key is waited for on its row, so
# no two spend one slack.
_SPEND = sa.text("""
    WITH spent AS (
        INSERT INTO rate_limits AS bucket (key_id, spent_until)
        VALUES (:key_id, now() + make_interval(secs => CAST(:seconds AS double precision)))
        ON CONFLICT (key_id) DO UPDATE
        SET spent_until = greatest(bucket.spent_until, now())
                          + make_interval(secs => CAST(:seconds AS double precision))
        WHERE bucket.spent_until <= now() + make_interval(secs => CAST(:slack AS double precision))
        RETURNING CAST(extract(epoch FROM spent_until - now()) AS double precision) AS ahead
    )
    SELECT (SELECT ahead FROM spent) AS spent,
           (SELECT CAST(extract(epoch FROM spent_until - now()) AS double precision)
            FROM rate_limits WHERE key_id = :key_id) AS ahead
""")


class RateLimits:
    """Each API key's bucket, as the time up to which its requests are spent (the generic
    cell rate algorithm): a request spends its cost in time, and passes while the key's
    spending runs no further ahead than its slack."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def spend(self, key_id: str, seconds: float, slack: float) -> tuple[bool, float]:
        """Spend `seconds` of `key_id`'s time when its spending runs at most `slack` seconds
        ahead of now, else nothing; answers whether it was spent, and how far ahead of now
        the key's spending then runs (by PostgreSQL's clock, the same for every process)."""
        params = {"key_id": key_id, "seconds": seconds, "slack": slack}
        async with connect(self._autocommit) as connection:
            row = (await connection.execute(_SPEND, params)).one()
        if row.spent is not None:
            return True, float(row.spent)
        return False, float(row.ahead or 0.0)
