"""Each drill counts submitted, completed, lost and doubly completed tasks, and passes only
with none lost, none completed twice, every task finished within a bound, and the API
answering 503, never another 5xx, while PostgreSQL is away."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from tests.drills.conftest import Drill, assert_nothing_lost
from tests.support.postgres import PrivatePostgres
from tests.support.rabbit import PrivateRabbit

logger = logging.getLogger(__name__)


async def test_sigkill_a_worker(drill: Callable[[], Drill]) -> None:
    run = drill()
    await run.start_workers(2)
    run.start_load()
    await run.run_load(3)
    assert await run.signal_workers(signal.SIGKILL, 1) == [-signal.SIGKILL]
    await run.run_load(3)
    await run.start_workers(1)
    await run.run_load(2)
    report = await run.finish()
    logger.warning("SIGKILL a worker: %s", report)
    assert_nothing_lost(report)


async def _restart_under_load(
    run: Drill, stop: Callable[[], None], start: Callable[[], None]
) -> dict[str, int]:
    """Two workers and a steady load; the server goes away for a while, and comes back."""
    await run.start_workers(2)
    run.start_load()
    await run.run_load(3)
    await asyncio.to_thread(stop)
    await run.run_load(2)
    await asyncio.to_thread(start)
    await run.run_load(3)
    return await run.finish()


async def test_restart_rabbitmq(
    drill: Callable[[], Drill], servers: tuple[PrivatePostgres, PrivateRabbit]
) -> None:
    _, rabbit = servers
    report = await _restart_under_load(drill(), rabbit.stop, rabbit.start)
    logger.warning("restart RabbitMQ: %s", report)
    assert_nothing_lost(report)


async def test_restart_postgresql(
    drill: Callable[[], Drill], servers: tuple[PrivatePostgres, PrivateRabbit]
) -> None:
    postgres, _ = servers
    report = await _restart_under_load(drill(), postgres.stop, postgres.start)
    logger.warning("restart PostgreSQL: %s", report)
    assert report["answered_503"] > 0, "PostgreSQL was away: the API must have said 503"
    assert_nothing_lost(report)


async def test_scale_workers_to_zero_and_back(drill: Callable[[], Drill]) -> None:
    run = drill()
    await run.start_workers(2)
    run.start_load()
    await run.run_load(3)
    assert await run.signal_workers(signal.SIGTERM) == [0, 0]
    await run.run_load(2)
    await run.start_workers(2)
    await run.run_load(3)
    report = await run.finish()
    logger.warning("scale 2 -> 0 -> 2: %s", report)
    assert_nothing_lost(report)
