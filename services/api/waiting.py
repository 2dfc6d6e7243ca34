"""Requests that wait for a task to finish, woken by PostgreSQL rather than by polling.

A trigger NOTIFYs `conveyor_task_finished` with the task's id when a task reaches a
terminal status, from whichever process wrote it. Each API process keeps one listening
connection (not one per waiter) and wakes the requests waiting for that id; NOTIFY
reaches every listener, so it works behind any number of API replicas. While the
listening connection is down, waiters look again every half second instead.

A wait outlives a database blip: the listening connection is opened again (a supervised
loop), and a waiter whose look fails keeps its place and looks again every half second
until its wait ends; only a look that fails at the end answers 503.

A finished task is read once per process, however many requests wait for it, and handed
to each: every waiter read it for its own tenant before it began to wait.

The places are shared between tenants: one tenant's requests hold at most a share of them
(WAIT_TENANT_PERCENT of WAIT_MAX_WAITERS), so another tenant's wait still finds a place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg

from services.core.domain import Task
from services.core.errors import StoreUnavailable

logger = logging.getLogger(__name__)

CHANNEL = "conveyor_task_finished"
# How often a waiter looks again while nothing can wake it.
POLL_SECONDS = 0.5


class TooManyWaiters(Exception):
    """This process has as many waiting requests as it takes."""


class TenantWaitersFull(Exception):
    """This tenant's requests hold their share of this process's waiting places."""


# A finished task as read for its waiters; None: look again yourself.
Woken = asyncio.Future["Task | None"]


class Waiter:
    """One waiting request's place, held for its whole wait, however often it is woken."""

    def __init__(self) -> None:
        self._woken: Woken = asyncio.get_running_loop().create_future()

    def wake(self, task: Task | None) -> None:
        if not self._woken.done():
            self._woken.set_result(task)

    async def woken(self, seconds: float) -> Task | None:
        """The finished task as read for all its waiters, or None: look again (after
        `seconds`, or sooner when the listening connection came or went)."""
        try:
            return await asyncio.wait_for(self._woken, seconds)
        except TimeoutError:
            return None
        finally:
            # Ready again before the caller looks: a finish from now on wakes it.
            self._woken = asyncio.get_running_loop().create_future()


class Waiters:
    def __init__(self, dsn: str, limit: int, read: Callable[[uuid.UUID], Awaitable[Task]]) -> None:
        self._dsn = dsn
        self._limit = limit
        # Reads a task whatever its tenant: for waiters that were let see it already.
        self._read = read
        self._waiting: dict[uuid.UUID, set[Waiter]] = {}
        self._reading: set[asyncio.Task[None]] = set()
        self._count = 0
        self._per_tenant: dict[str, int] = {}
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def waiting_for(
        self, task_id: uuid.UUID, tenant: str, tenant_percent: int = 100
    ) -> Iterator[Waiter]:
        """A place for the block, woken when `task_id` finishes; TenantWaitersFull when
        `tenant` holds `tenant_percent` of the limit (at least one place), TooManyWaiters
        past the limit."""
        held = self._per_tenant.get(tenant, 0)
        if held >= max(1, self._limit * tenant_percent // 100):
            raise TenantWaitersFull(f"{held} requests of this tenant are waiting in this process")
        if self._count >= self._limit:
            raise TooManyWaiters(f"{self._count} requests are waiting in this process")
        waiter = Waiter()
        self._waiting.setdefault(task_id, set()).add(waiter)
        self._count += 1
        self._per_tenant[tenant] = held + 1
        try:
            yield waiter
        finally:
            self._count -= 1
            if (left := self._per_tenant[tenant] - 1) > 0:
                self._per_tenant[tenant] = left
            else:
                del self._per_tenant[tenant]
            waiters = self._waiting.get(task_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiting[task_id]

    @property
    def poll_seconds(self) -> float | None:
        """How long a waiter may sleep before it must look again: None while a finish
        wakes it."""
        return None if self.listening.is_set() else POLL_SECONDS

    async def listen_once(self) -> float:
        """Listen until the connection is lost; answer the pause before listening again."""
        try:
            connection = await asyncpg.connect(self._dsn, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            raise StoreUnavailable(f"cannot listen for finished tasks: {error}") from error
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._notified)
            self.listening.set()
            self._wake_all()  # a finish may have gone unheard while not listening
            await lost.wait()
        finally:
            self.listening.clear()
            self._wake_all()  # they look again, and poll until a listener is back
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)
        return 1.0

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            task_id = uuid.UUID(payload)
        except ValueError:
            return
        if task_id in self._waiting:
            reading = asyncio.get_running_loop().create_task(self._hand_out(task_id))
            self._reading.add(reading)
            reading.add_done_callback(self._reading.discard)

    async def _hand_out(self, task_id: uuid.UUID) -> None:
        """Read the finished task once and answer every waiter with it; when the read
        fails, each looks again itself."""
        try:
            task: Task | None = await self._read(task_id)
        except Exception:  # noqa: BLE001 - the waiters read it themselves
            task = None
        for waiter in self._waiting.get(task_id, ()):
            waiter.wake(task)

    def _wake_all(self) -> None:
        for waiters in self._waiting.values():
            for waiter in waiters:
                waiter.wake(None)
