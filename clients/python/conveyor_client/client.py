"""Client (blocking) and AsyncClient (asyncio): the same calls, the same retries."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from conveyor_client import _calls
from conveyor_client._calls import LONGEST_WAIT, Call, Retry
from conveyor_client.errors import ProblemError, Unreachable
from conveyor_client.models import (
    Attempt,
    AttemptLogs,
    Caller,
    Changed,
    Kind,
    Queue,
    Schedule,
    Submitted,
    Task,
    Worker,
)

T = TypeVar("T")

# Errors after which the request surely never reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _Base:
    def __init__(self, retry: Retry | None, timeout: float) -> None:
        self._policy = retry or Retry()
        # The longest Retry-After waited for: a call fails at once when told to wait longer.
        self._patience = timeout

    def _again(self, call: Call[Any], error: Exception, tried: int) -> float | None:
        """How long to wait before trying `call` again after `error`; None: give up."""
        if tried >= self._policy.attempts:
            return None
        if isinstance(error, ProblemError):
            told = error.retry_after
            if error.status not in (429, 503) or (told is not None and told > self._patience):
                return None
            return self._policy.delay(tried, told)
        if isinstance(error, _NOT_SENT) or (
            call.harmless and isinstance(error, httpx.TransportError)
        ):
            return self._policy.delay(tried, None)
        return None

    @staticmethod
    def _request(http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        timeout = httpx.Timeout(call.timeout) if call.timeout else http.timeout
        return http.build_request(
            call.method,
            call.path,
            params=tuple(call.params),
            json=call.body,
            headers=call.headers,
            timeout=timeout,
        )


class Client(_Base):
    """A blocking client. `url` and `key` default to CONVEYOR_API_URL (else
    http://127.0.0.1:8000) and CONVEYOR_API_KEY; use it as a context manager, or close()."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(retry, timeout)
        base, headers = _calls.settings(url, key)
        self._http = httpx.Client(
            base_url=base, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        tried = 0
        while True:
            tried += 1
            try:
                return _calls.answer(call, self._http.send(self._request(self._http, call)))
            except (ProblemError, httpx.TransportError) as error:
                pause = self._again(call, error, tried)
                if pause is None:
                    if isinstance(error, httpx.TransportError):
                        raise Unreachable(f"{self._http.base_url}: {error!r}") from error
                    raise
                time.sleep(pause)

    def submit(self, title: str, *, idempotency_key: str | None = None, **fields: Any) -> Task:
        """Submit a task (fields: kind, payload, priority, description, queue, max_attempts,
        timeout_seconds, scheduled_at). Made once however often it is retried: the client
        sends an idempotency key of its own unless given one."""
        return self._run(_calls.submit(_calls.task_body(title, **fields), idempotency_key))

    def submit_many(self, tasks: Iterable[Mapping[str, Any]]) -> builtins.list[Submitted]:
        """Submit up to 1,000 task bodies in one request; each answered on its own."""
        return self._run(_calls.submit_many(tasks))

    def get(self, task_id: str) -> Task:
        return self._run(_calls.get(task_id))

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """The task once it is terminal, or as it is after `timeout` seconds (None: no
        limit). The server holds each request until the task finishes (no polling)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = LONGEST_WAIT if deadline is None else deadline - time.monotonic()
            task = self._run(_calls.get(task_id, min(left, LONGEST_WAIT) if left > 0 else None))
            if task.is_terminal or left <= 0:
                return task

    def list(self, *, page_size: int = 100, **chosen: Any) -> Iterator[Task]:
        """Every task matching the filters (status, priority, kind, queue, created_after,
        created_before, title), newest first, page after page."""
        where, cursor = _calls.filters(**chosen), None
        while True:
            items, cursor = self._run(_calls.page(where, page_size, cursor))
            yield from items
            if cursor is None:
                return

    def cancel(self, task_id: str) -> Task:
        """Cancel a queued task, or ask a running one to stop."""
        return self._run(_calls.cancel(task_id))

    def cancel_matching(self, **chosen: Any) -> Changed:
        """Cancel every task matching the filters."""
        return self._run(_calls.matching("cancel", _calls.filters(**chosen)))

    def retry(self, task_id: str) -> Task:
        """Run a FAILED or CANCELLED task again."""
        return self._run(_calls.rerun(task_id))

    def retry_matching(self, **chosen: Any) -> Changed:
        """Run again every FAILED or CANCELLED task matching the filters."""
        return self._run(_calls.matching("retry", _calls.filters(**chosen)))

    def attempts(self, task_id: str) -> builtins.list[Attempt]:
        return self._run(_calls.attempts(task_id))

    def attempt_logs(self, task_id: str, attempt: int) -> AttemptLogs:
        """The last lines the handler logged in attempt `attempt` (from 1) of the task."""
        return self._run(_calls.attempt_logs(task_id, attempt))

    def whoami(self) -> Caller:
        return self._run(_calls.whoami())

    def create_schedule(
        self,
        name: str,
        cron: str,
        task: Mapping[str, Any],
        *,
        timezone: str = "UTC",
        missed: str = "skip",
        paused: bool = False,
    ) -> Schedule:
        """A schedule: a task made from `task` (a task body) at each due time of `cron`."""
        call = _calls.create_schedule(name, cron, dict(task), timezone, missed, paused)
        return self._run(call)

    def schedules(self, *, page_size: int = 100) -> Iterator[Schedule]:
        cursor = None
        while True:
            items, cursor = self._run(_calls.schedule_page(page_size, cursor))
            yield from items
            if cursor is None:
                return

    def get_schedule(self, schedule_id: str) -> Schedule:
        return self._run(_calls.schedule(schedule_id))

    def pause_schedule(self, schedule_id: str) -> Schedule:
        return self._run(_calls.schedule_action(schedule_id, "pause"))

    def resume_schedule(self, schedule_id: str) -> Schedule:
        return self._run(_calls.schedule_action(schedule_id, "resume"))

    def delete_schedule(self, schedule_id: str) -> None:
        self._run(_calls.delete_schedule(schedule_id))

    def queues(self) -> builtins.list[Queue]:
        """The installation's queues (a key with the platform scope)."""
        return self._run(_calls.queues())

    def pause_queue(self, name: str) -> Queue:
        return self._run(_calls.queue(name, "pause"))

    def resume_queue(self, name: str) -> Queue:
        return self._run(_calls.queue(name, "resume"))

    def workers(self, queue: str | None = None) -> builtins.list[Worker]:
        """The worker processes, alive, draining or gone, or those consuming `queue` (a key
        with the platform scope)."""
        return self._run(_calls.workers(queue))

    def kinds(self) -> builtins.list[Kind]:
        """The kinds the API takes now, with their payload schemas and workers."""
        return self._run(_calls.kinds())

    def forget_kind(self, name: str) -> None:
        """Make the API refuse a kind no worker runs any more (a key with the platform
        scope); a worker that runs it registers it again when it starts."""
        self._run(_calls.forget_kind(name))


class AsyncClient(_Base):
    """The asyncio client: Client's calls, awaited (`list` and `schedules` are async
    iterators). Use it as an async context manager, or `await aclose()`."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(retry, timeout)
        base, headers = _calls.settings(url, key)
        self._http = httpx.AsyncClient(
            base_url=base, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        tried = 0
        while True:
            tried += 1
            try:
                return _calls.answer(call, await self._http.send(self._request(self._http, call)))
            except (ProblemError, httpx.TransportError) as error:
                pause = self._again(call, error, tried)
                if pause is None:
                    if isinstance(error, httpx.TransportError):
                        raise Unreachable(f"{self._http.base_url}: {error!r}") from error
                    raise
                await asyncio.sleep(pause)

    async def submit(
        self, title: str, *, idempotency_key: str | None = None, **fields: Any
    ) -> Task:
        """As Client.submit."""
        return await self._run(_calls.submit(_calls.task_body(title, **fields), idempotency_key))

    async def submit_many(self, tasks: Iterable[Mapping[str, Any]]) -> builtins.list[Submitted]:
        return await self._run(_calls.submit_many(tasks))

    async def get(self, task_id: str) -> Task:
        return await self._run(_calls.get(task_id))

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:  # noqa: ASYNC109
        """As Client.wait."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = LONGEST_WAIT if deadline is None else deadline - loop.time()
            call = _calls.get(task_id, min(left, LONGEST_WAIT) if left > 0 else None)
            task = await self._run(call)
            if task.is_terminal or left <= 0:
                return task

    async def list(self, *, page_size: int = 100, **chosen: Any) -> AsyncIterator[Task]:
        """As Client.list."""
        where, cursor = _calls.filters(**chosen), None
        while True:
            items, cursor = await self._run(_calls.page(where, page_size, cursor))
            for item in items:
                yield item
            if cursor is None:
                return

    async def cancel(self, task_id: str) -> Task:
        return await self._run(_calls.cancel(task_id))

    async def cancel_matching(self, **chosen: Any) -> Changed:
        return await self._run(_calls.matching("cancel", _calls.filters(**chosen)))

    async def retry(self, task_id: str) -> Task:
        return await self._run(_calls.rerun(task_id))

    async def retry_matching(self, **chosen: Any) -> Changed:
        return await self._run(_calls.matching("retry", _calls.filters(**chosen)))

    async def attempts(self, task_id: str) -> builtins.list[Attempt]:
        return await self._run(_calls.attempts(task_id))

    async def attempt_logs(self, task_id: str, attempt: int) -> AttemptLogs:
        return await self._run(_calls.attempt_logs(task_id, attempt))

    async def whoami(self) -> Caller:
        return await self._run(_calls.whoami())

    async def create_schedule(
        self,
        name: str,
        cron: str,
        task: Mapping[str, Any],
        *,
        timezone: str = "UTC",
        missed: str = "skip",
        paused: bool = False,
    ) -> Schedule:
        call = _calls.create_schedule(name, cron, dict(task), timezone, missed, paused)
        return await self._run(call)

    async def schedules(self, *, page_size: int = 100) -> AsyncIterator[Schedule]:
        cursor = None
        while True:
            items, cursor = await self._run(_calls.schedule_page(page_size, cursor))
            for item in items:
                yield item
            if cursor is None:
                return

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return await self._run(_calls.schedule(schedule_id))

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        return await self._run(_calls.schedule_action(schedule_id, "pause"))

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        return await self._run(_calls.schedule_action(schedule_id, "resume"))

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._run(_calls.delete_schedule(schedule_id))

    async def queues(self) -> builtins.list[Queue]:
        return await self._run(_calls.queues())

    async def pause_queue(self, name: str) -> Queue:
        return await self._run(_calls.queue(name, "pause"))

    async def resume_queue(self, name: str) -> Queue:
        return await self._run(_calls.queue(name, "resume"))

    async def workers(self, queue: str | None = None) -> builtins.list[Worker]:
        return await self._run(_calls.workers(queue))

    async def kinds(self) -> builtins.list[Kind]:
        return await self._run(_calls.kinds())

    async def forget_kind(self, name: str) -> None:
        await self._run(_calls.forget_kind(name))
