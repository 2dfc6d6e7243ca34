"""What the cluster-wide rate limit costs a request: its one statement, timed.

    python -m bench.rate_limit

Against the local PostgreSQL, in a database of its own (conveyor_bench_limits, made anew
and dropped at the end): a plain round trip (SELECT 1) beside the limit's statement, one
at a time, then from 16 connections at once on 16 keys and on one key.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
import sqlalchemy as sa

from services.core.db.engine import create_engine
from services.core.db.limits import RateLimits
from services.core.db.migrate import upgrade
from services.core.settings import Settings

ADMIN_DSN = os.environ.get(
    "CONVEYOR_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DATABASE = "conveyor_bench_limits"
URL = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + (
    f"/{DATABASE}"
)
ROUNDS = 5000
CONNECTIONS = 16


async def _recreate(drop_only: bool = False) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        if not drop_only:
            await admin.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await admin.close()


async def _timed(call: Callable[[int], Awaitable[object]], rounds: int) -> list[float]:
    """Each call's microseconds, one after another."""
    times = []
    for n in range(rounds):
        started = time.perf_counter()
        await call(n)
        times.append((time.perf_counter() - started) * 1e6)
    return times


def _line(what: str, times: list[float]) -> None:
    cuts = statistics.quantiles(times, n=100)
    print(
        f"  {what}: mean {statistics.fmean(times):.0f} us, p50 {cuts[49]:.0f} us, "
        f"p99 {cuts[98]:.0f} us"
    )


async def _measure() -> None:
    engine = create_engine(Settings(database_url=URL, database_pool_size=CONNECTIONS))
    limits = RateLimits(engine)
    try:
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))  # the pool's first connection

            async def round_trip(_: int) -> None:
                await connection.execute(sa.text("SELECT 1"))

            for _ in range(2):  # the second of each: warm
                plain = await _timed(round_trip, ROUNDS)
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

        async def checked_out(_: int) -> None:
            async with autocommit.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))

        for _ in range(2):
            pooled = await _timed(checked_out, ROUNDS)
            # 100/second: a request spends 10 ms; the slack lets every one pass.
            spent = await _timed(lambda _: limits.spend("bench", 0.01, 1e9), ROUNDS)
        print(f"one at a time, {ROUNDS} each:")
        _line("SELECT 1 on a held connection", plain)
        _line("SELECT 1, checking a connection out of the pool", pooled)
        _line("the limit's statement, checking a connection out", spent)
        for keys in (CONNECTIONS, 1):
            started = time.perf_counter()

            async def spender(n: int, keys: int = keys) -> None:
                for _ in range(ROUNDS // CONNECTIONS):
                    await limits.spend(f"key-{n % keys}", 0.01, 1e9)

            await asyncio.gather(*(spender(n) for n in range(CONNECTIONS)))
            seconds = time.perf_counter() - started
            done = ROUNDS // CONNECTIONS * CONNECTIONS
            print(f"{CONNECTIONS} at once on {keys} key(s): {done / seconds:,.0f} statements/s")
    finally:
        await engine.dispose()


def main() -> None:
    asyncio.run(_recreate())
    try:
        upgrade(URL)
        asyncio.run(_measure())
    finally:
        asyncio.run(_recreate(drop_only=True))


if __name__ == "__main__":
    main()
