"""Supervised loops: no error in one pass stops a loop, and a loop that keeps failing says so.

Every loop that runs beside the requests or the tasks (the relay, the recovery sweep, a
worker's heartbeat and consumer) runs its passes through `Supervisor.run`, and the
operator's sweep each of its passes through `Supervisor.run_once`. An outage of
PostgreSQL or RabbitMQ is expected: it is logged as a warning and waited out with a
backoff. Any other error is a bug or bad data: it is logged with its stack, counted in
`conveyor_background_errors_total{loop}`, backed off, and the next pass runs. A loop whose
last FAILING_AFTER passes all failed is reported by `failing()` and
`conveyor_loop_failing{loop}`: the API's /health/live names it (and stays 200: every API pod
runs the same loops on the same rows, so bad data would fail them all at once, and neither
taking them out of the Service nor restarting them mends a row), and the worker's liveness
fails, so a worker whose heartbeat or consumer stopped is restarted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from services.core.amqp.broker import BrokerUnavailable
from services.core.errors import StoreUnavailable
from services.core.telemetry.metrics import BACKGROUND_ERRORS, LOOP_FAILING

logger = logging.getLogger(__name__)

FAILING_AFTER = 3
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
OUTAGES: tuple[type[BaseException], ...] = (StoreUnavailable, BrokerUnavailable)

# One pass: answers how long to wait before the next one.
Step = Callable[[], Awaitable[float]]
Pause = Callable[[float], Awaitable[None]]


class Supervisor:
    """Runs the loops of one process and remembers which of them keep failing."""

    def __init__(self) -> None:
        self._errors_in_a_row: dict[str, int] = {}
        self._outages_in_a_row: dict[str, int] = {}

    def failing(self) -> list[str]:
        """The loops whose last FAILING_AFTER passes failed with an unexpected error."""
        # Also read from the worker's metrics thread: iterate over a snapshot.
        counts = list(self._errors_in_a_row.items())
        return sorted(name for name, n in counts if n >= FAILING_AFTER)

    async def run(
        self,
        name: str,
        step: Step,
        pause: Pause = asyncio.sleep,
        outages: tuple[type[BaseException], ...] = OUTAGES,
        back_off: Pause = asyncio.sleep,
    ) -> None:
        """Run `step` until cancelled, with `pause` for the rest a pass asks (which the loop
        may cut short, as the relay's kick does) and `back_off` after a failed pass (which
        nothing cuts short); survive whatever a pass raises."""
        while True:
            wait = await self.run_once(name, step, outages, back_off)
            if wait is not None:
                await (pause(wait) if wait > 0 else asyncio.sleep(0))

    async def run_once(
        self,
        name: str,
        step: Step,
        outages: tuple[type[BaseException], ...] = OUTAGES,
        back_off: Pause = asyncio.sleep,
    ) -> float | None:
        """One supervised pass of the loop `name`, for a loop that something else repeats
        (the operator's sweep, one pass per due policy): the rest the pass asked, or None
        after a failed pass, once backed off. Counted and reported as a pass of `run`."""
        if name not in self._errors_in_a_row:
            self._errors_in_a_row[name] = self._outages_in_a_row[name] = 0
            LOOP_FAILING.labels(name).set(0)
        try:
            wait = await step()
        except outages as error:
            self._outages_in_a_row[name] += 1
            wait = _backoff(self._outages_in_a_row[name])
            logger.warning(
                "%s paused %.1f s: %s", name, wait, error or type(error.__cause__).__name__
            )
        except Exception:  # the outermost loop: log, count, back off, carry on
            self._errors_in_a_row[name] += 1
            wait = _backoff(self._errors_in_a_row[name])
            BACKGROUND_ERRORS.labels(name).inc()
            LOOP_FAILING.labels(name).set(int(self._errors_in_a_row[name] >= FAILING_AFTER))
            logger.exception("%s pass failed; next in %.1f s", name, wait)
        else:
            self._errors_in_a_row[name] = self._outages_in_a_row[name] = 0
            LOOP_FAILING.labels(name).set(0)
            return wait
        await back_off(wait)
        return None


# The shortest rest before a due time, so a clock a little ahead of PostgreSQL's does not spin.
_MIN_REST = 0.01


def rest_until(due: datetime | None, most: float) -> float:
    """Seconds to rest before `due` (None: nothing due), at most `most`."""
    if due is None:
        return most
    return min(max((due - datetime.now(UTC)).total_seconds(), _MIN_REST), most)


class Alarm:
    """A loop's rest that kick() cuts short: a pause to pass to Supervisor.run."""

    def __init__(self) -> None:
        self._kicked = asyncio.Event()

    def kick(self) -> None:
        """End the current rest now, or the next one at once."""
        self._kicked.set()

    async def pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._kicked.wait(), seconds)
        except TimeoutError:
            pass
        self._kicked.clear()


def _backoff(failures: int) -> float:
    return float(min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX))
