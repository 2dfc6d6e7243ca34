"""Each API call as data (method, path, body, whether a repeat is harmless, how to read the
answer), and the retry policy: shared by the sync and the async client, which only send."""

from __future__ import annotations

import dataclasses
import os
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx

from conveyor_client.errors import PREFIX, IdempotencyKeyReused, problem_of
from conveyor_client.models import (
    Attempt,
    AttemptLogs,
    Caller,
    Changed,
    Kind,
    KindVersion,
    LogLine,
    Queue,
    Schedule,
    Submitted,
    Task,
    Worker,
    record,
)

DEFAULT_URL = "http://127.0.0.1:8000"
# The longest a single long-poll asks the server to hold (the API's own bound).
LONGEST_WAIT = 60.0


@dataclass(frozen=True, slots=True)
class Retry:
    """How calls are tried again: on a connection that could not be made, and on 429 and
    503 answers (which the server gives before acting), up to `attempts` tries in all,
    waiting as long as `Retry-After` says when the server says (the client gives up at
    once when that is longer than its timeout: sooner would be refused again), else an
    exponential backoff from `base` up to `cap` seconds with full jitter. Calls whose
    repeat is harmless (reads, submits with their idempotency key, cancels) are also
    tried again after a connection lost mid-call."""

    attempts: int = 6
    base: float = 0.2
    cap: float = 10.0

    def delay(self, tried: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return random.uniform(0, min(self.cap, self.base * 2 ** (tried - 1)))


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[Any], T]
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # A repeat has the same effect as one call: retried even after a lost connection.
    harmless: bool = True
    timeout: float | None = None


def settings(url: str | None, key: str | None) -> tuple[str, dict[str, str]]:
    """The base URL and headers, from the arguments or CONVEYOR_API_URL and CONVEYOR_API_KEY."""
    key = key if key is not None else os.environ.get("CONVEYOR_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return url or os.environ.get("CONVEYOR_API_URL", DEFAULT_URL), headers


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


def answer(call: Call[T], response: httpx.Response) -> T:
    """What the call's answer holds, or its ProblemError."""
    if response.status_code == 204:
        return call.read(None)
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:200]}
    if response.is_error:
        raise problem_of(response.status_code, body, retry_after(response))
    return call.read(body)


def _time(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def filters(
    *,
    status: str | Iterable[str] | None = None,
    priority: str | Iterable[str] | None = None,
    kind: str | None = None,
    queue: str | None = None,
    created_after: datetime | str | None = None,
    created_before: datetime | str | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """The listing's filters, as the API takes them; None leaves one out."""
    chosen: dict[str, Any] = {
        "status": [status] if isinstance(status, str) else list(status) if status else None,
        "priority": [priority]
        if isinstance(priority, str)
        else list(priority)
        if priority
        else None,
        "kind": kind,
        "queue": queue,
        "created_after": _time(created_after),
        "created_before": _time(created_before),
        "title": title,
    }
    return {name: value for name, value in chosen.items() if value}


def _params(chosen: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for name, value in chosen.items():
        for one in value if isinstance(value, list) else [value]:
            pairs.append((name, str(one)))
    return pairs


def _task(body: Any) -> Task:
    return record(Task, body)


def task_body(
    title: str,
    *,
    kind: str = "demo",
    payload: Mapping[str, Any] | None = None,
    priority: str = "MEDIUM",
    description: str = "",
    queue: str | None = None,
    max_attempts: int | None = None,
    timeout_seconds: float | None = None,
    scheduled_at: datetime | str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": title,
        "kind": kind,
        "payload": dict(payload or {}),
        "priority": priority,
        "description": description,
    }
    optional = {
        "queue": queue,
        "max_attempts": max_attempts,
        "timeout_seconds": timeout_seconds,
        "scheduled_at": _time(scheduled_at),
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


def submit(body: dict[str, Any], idempotency_key: str | None) -> Call[Task]:
    # A key of our own, so that a submit retried after a lost answer makes one task.
    key = idempotency_key or uuid.uuid4().hex
    return Call("POST", "/api/v1/tasks", _task, body=body, headers={"Idempotency-Key": key})


def _submitted(item: dict[str, Any]) -> Submitted:
    problem = item.get("problem")
    if problem is None and item["outcome"] == "refused":
        # Past the first refusals the API answers a refused task by its status alone; in a
        # batch, 409 is always a reused idempotency key.
        problem = {
            "type": f"{PREFIX}{IdempotencyKeyReused.problem}" if item["status"] == 409 else "",
            "detail": "refused; the answer details only the first refused tasks",
        }
    return Submitted(
        item["outcome"],
        item["status"],
        _task(item["task"]) if item.get("task") else None,
        problem_of(item["status"], problem) if problem else None,
    )


def submit_many(bodies: Iterable[Mapping[str, Any]]) -> Call[list[Submitted]]:
    tasks = [{"idempotency_key": uuid.uuid4().hex, **body} for body in bodies]
    return Call(
        "POST",
        "/api/v1/tasks:batch",
        lambda body: [_submitted(item) for item in body["items"]],
        body={"tasks": tasks},
    )


def get(task_id: str, wait: float | None = None) -> Call[Task]:
    params = [("wait", f"{max(wait, 0.001):.3f}")] if wait else []
    timeout = wait + 10 if wait else None
    return Call("GET", f"/api/v1/tasks/{task_id}", _task, params=params, timeout=timeout)


def page(
    chosen: Mapping[str, Any], limit: int, cursor: str | None
) -> Call[tuple[list[Task], str | None]]:
    params = [*_params(chosen), ("limit", str(limit))]
    if cursor:
        params.append(("cursor", cursor))
    return Call(
        "GET",
        "/api/v1/tasks",
        lambda body: ([_task(item) for item in body["items"]], body["next_cursor"]),
        params=params,
    )


def cancel(task_id: str) -> Call[Task]:
    # Not harmless: a repeat after a lost answer finds the task cancelled already (409).
    return Call("DELETE", f"/api/v1/tasks/{task_id}", _task, harmless=False)


def rerun(task_id: str) -> Call[Task]:
    # Not harmless: a repeat after a lost answer finds the task queued again (409).
    return Call("POST", f"/api/v1/tasks/{task_id}:retry", _task, harmless=False)


def matching(action: str, chosen: Mapping[str, Any]) -> Call[Changed]:
    return Call(
        "POST",
        f"/api/v1/tasks:{action}",
        lambda body: Changed(body["changed"], body.get("cancel_requested", 0)),
        body=dict(chosen),
        # Harmless to the tasks, but a repeat would count none changed: not retried blind.
        harmless=False,
    )


def attempts(task_id: str) -> Call[list[Attempt]]:
    return Call(
        "GET",
        f"/api/v1/tasks/{task_id}/attempts",
        lambda body: [record(Attempt, item) for item in body["items"]],
    )


def attempt_logs(task_id: str, attempt: int) -> Call[AttemptLogs]:
    return Call(
        "GET",
        f"/api/v1/tasks/{task_id}/attempts/{attempt}/logs",
        lambda body: AttemptLogs(
            body["attempt"], [record(LogLine, line) for line in body["lines"]], body["dropped"]
        ),
    )


def whoami() -> Call[Caller]:
    return Call("GET", "/api/v1/whoami", lambda body: record(Caller, body))


def _schedule(body: Any) -> Schedule:
    return record(Schedule, body)


def create_schedule(
    name: str, cron: str, task: dict[str, Any], timezone: str, missed: str, paused: bool
) -> Call[Schedule]:
    body = {"name": name, "cron": cron, "timezone": timezone, "missed": missed, "paused": paused}
    return Call("POST", "/api/v1/schedules", _schedule, body={**body, "task": task}, harmless=False)


def schedule_page(limit: int, cursor: str | None) -> Call[tuple[list[Schedule], str | None]]:
    params = [("limit", str(limit))] + ([("cursor", cursor)] if cursor else [])
    return Call(
        "GET",
        "/api/v1/schedules",
        lambda body: ([_schedule(item) for item in body["items"]], body["next_cursor"]),
        params=params,
    )


def schedule(schedule_id: str) -> Call[Schedule]:
    return Call("GET", f"/api/v1/schedules/{schedule_id}", _schedule)


def schedule_action(schedule_id: str, action: str) -> Call[Schedule]:
    return Call("POST", f"/api/v1/schedules/{schedule_id}:{action}", _schedule)


def delete_schedule(schedule_id: str) -> Call[None]:
    # Not harmless: a repeat after a lost answer finds it gone (404).
    return Call("DELETE", f"/api/v1/schedules/{schedule_id}", lambda _: None, harmless=False)


def queues() -> Call[list[Queue]]:
    return Call(
        "GET", "/api/v1/queues", lambda body: [record(Queue, item) for item in body["items"]]
    )


def queue(name: str, action: str) -> Call[Queue]:
    return Call("POST", f"/api/v1/queues/{name}:{action}", lambda body: record(Queue, body))


def kinds() -> Call[list[Kind]]:
    return Call("GET", "/api/v1/kinds", lambda body: [_kind(item) for item in body["items"]])


def _kind(item: dict[str, Any]) -> Kind:
    versions = [record(KindVersion, version) for version in item["versions"]]
    return dataclasses.replace(record(Kind, item), versions=versions)


def forget_kind(name: str) -> Call[None]:
    # Not harmless: a repeat after a lost answer finds it gone (404).
    return Call("DELETE", f"/api/v1/kinds/{name}", lambda _: None, harmless=False)


def workers(queue: str | None = None) -> Call[list[Worker]]:
    params = [("queue", queue)] if queue else []
    return Call(
        "GET",
        "/api/v1/workers",
        lambda body: [record(Worker, item) for item in body["items"]],
        params=params,
    )
