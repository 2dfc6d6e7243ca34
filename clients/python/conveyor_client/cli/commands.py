"""What each client command does with the client, and how its failures become one line on
stderr and an exit code (the codes are listed in `conveyor_client.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from conveyor_client._calls import Retry, settings
from conveyor_client.cli.output import (
    ATTEMPT_COLUMNS,
    KIND_COLUMNS,
    QUEUE_COLUMNS,
    SCHEDULE_COLUMNS,
    TASK_COLUMNS,
    WORKER_COLUMNS,
    plain,
    show,
    table,
)
from conveyor_client.client import Client
from conveyor_client.errors import ProblemError, Unreachable
from conveyor_client.models import Task

EXIT_TASK_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_REFUSED, EXIT_SERVER, EXIT_UNREACHABLE = range(
    1, 7
)
Command = Callable[[Client, argparse.Namespace], int]


class Failed(Exception):
    """A command that cannot go on: its one line, and the exit code it ends with."""

    def __init__(self, line: str, code: int) -> None:
        super().__init__(line)
        self.code = code


def execute(args: argparse.Namespace, prog: str) -> int:
    """Run a parsed client command; every failure becomes one line on stderr, `prog: ...`,
    and an exit code."""
    url = settings(args.url, None)[0]
    try:
        with Client(args.url, args.key, retry=Retry(attempts=max(args.retries, 1))) as client:
            return COMMANDS[(args.command, getattr(args, "action", None))](client, args)
    except Failed as error:
        _fail(prog, args, str(error), error)
        return error.code
    except ProblemError as error:
        _fail(prog, args, f"{error} (HTTP {error.status} {error.type.rpartition(':')[2]})", error)
        return EXIT_REFUSED if error.status < 500 else EXIT_SERVER
    except Unreachable as error:
        _fail(prog, args, f"cannot reach the API at {url}: {_reason(error)}", error)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - whatever it is, one line and a code
        _fail(prog, args, f"{type(error).__name__}: {error}", error)
        return EXIT_SERVER


def _reason(error: Unreachable) -> str:
    """Why the connection failed, as the operating system or httpx put it."""
    cause = error.__cause__
    if cause is None:
        return str(error)
    return str(cause) or type(cause).__name__


def _fail(prog: str, args: argparse.Namespace, line: str, error: Exception) -> None:
    """One line on stderr; with --debug, the traceback first (the exit code stays)."""
    if args.debug:
        traceback.print_exception(error)
    print(f"{prog}: {line}", file=sys.stderr)


# --- tasks -------------------------------------------------------------------------------


def _outcome(task: Task) -> int:
    if task.status == "COMPLETED":
        return 0
    return EXIT_TASK_FAILED if task.is_terminal else EXIT_TIMEOUT


def _submit(client: Client, args: argparse.Namespace) -> int:
    fields = {
        "kind": args.kind,
        "priority": args.priority,
        "payload": args.payload,
        "queue": args.queue,
        "max_attempts": args.max_attempts,
        "timeout_seconds": args.timeout_seconds,
        "scheduled_at": args.scheduled_at,
    }
    task = client.submit(args.title, idempotency_key=args.idempotency_key, **fields)
    if args.wait:
        task = client.wait(task.id, timeout=args.wait)
        show(args.output, task)
        return _outcome(task)
    show(args.output, task)
    return 0


def _chosen(args: argparse.Namespace) -> dict[str, Any]:
    """The filters given on the command line."""
    return {
        "status": args.status,
        "priority": args.priority,
        "kind": args.kind,
        "queue": args.queue,
        "title": args.title,
        "created_after": args.created_after,
        "created_before": args.created_before,
    }


def _newest(client: Client, args: argparse.Namespace, limit: int) -> list[Task]:
    """Up to `limit` tasks matching the filters, newest first (0: every one)."""
    tasks = []
    for task in client.list(page_size=min(limit or 100, 100), **_chosen(args)):
        tasks.append(task)
        if limit and len(tasks) >= limit:
            break
    return tasks


def _list(client: Client, args: argparse.Namespace) -> int:
    show(args.output, _newest(client, args, args.limit), TASK_COLUMNS)
    return 0


def _watch(client: Client, args: argparse.Namespace) -> int:
    """The newest tasks matching the filters, redrawn every interval until Ctrl-C."""
    while True:
        tasks = _newest(client, args, max(args.limit, 1))
        if args.output == "json":
            print(json.dumps(plain(tasks)), flush=True)
        else:
            stamp = datetime.now().strftime("%H:%M:%S")
            heading = f"{len(tasks)} newest task(s) at {stamp}, every {args.interval:g} s (Ctrl-C)"
            print(f"\x1b[H\x1b[2J{heading}\n\n{table(tasks, TASK_COLUMNS)}", flush=True)
        time.sleep(args.interval)


def _bulk(name: str) -> Command:
    """`tasks cancel|retry`: one task by its id, or every one matching the filters."""

    def act(client: Client, args: argparse.Namespace) -> int:
        if args.id:
            show(args.output, getattr(client, name)(args.id))
            return 0
        chosen = {k: v for k, v in _chosen(args).items() if v}
        if not chosen and not args.all:
            raise Failed("give a task id, filters (--status, --kind, ...), or --all", EXIT_USAGE)
        show(args.output, getattr(client, f"{name}_matching")(**chosen))
        return 0

    return act


def _logs(client: Client, args: argparse.Namespace) -> int:
    """The lines the handler logged in one attempt, a line each (as JSON with -o json)."""
    attempt = args.attempt if args.attempt is not None else client.get(args.id).attempts
    if attempt < 1:
        raise Failed(f"task {args.id} has not started yet", EXIT_REFUSED)
    logs = client.attempt_logs(args.id, attempt)
    if args.output == "json":
        print(json.dumps(plain(logs), indent=2))
        return 0
    if logs.dropped:
        print(f"({logs.dropped} earlier line(s) not kept)")
    for line in logs.lines:
        print(f"{line.logged_at.isoformat(timespec='milliseconds')} {line.level:<7} {line.message}")
    return 0


def _wait(client: Client, args: argparse.Namespace) -> int:
    task = client.wait(args.id, timeout=args.timeout)
    show(args.output, task)
    return _outcome(task)


# --- schedules ---------------------------------------------------------------------------


def schedule_id(client: Client, given: str) -> str:
    """The id of the schedule `given` names: an id as it is, else the tenant's schedule of
    that name. The API finds schedules by id only and has no filter by name: its listing,
    by name, is read until the name turns up."""
    try:
        return str(uuid.UUID(given))
    except ValueError:
        pass
    for schedule in client.schedules():
        if schedule.name == given:
            return schedule.id
    raise Failed(f"no schedule is named {given!r}", EXIT_REFUSED)


def _on_schedule(action: str) -> Command:
    """`schedules get|pause|resume|delete ID|NAME`."""

    def act(client: Client, args: argparse.Namespace) -> int:
        found = schedule_id(client, args.schedule)
        if action == "delete":
            client.delete_schedule(found)
            return 0
        show(args.output, getattr(client, f"{action}_schedule")(found))
        return 0

    return act


def _schedule_create(client: Client, args: argparse.Namespace) -> int:
    task = {
        "title": args.title or args.name,
        "kind": args.kind,
        "priority": args.priority,
        "payload": args.payload,
    }
    made = client.create_schedule(
        args.name, args.cron, task, timezone=args.timezone, missed=args.missed
    )
    show(args.output, made)
    return 0


# --- the platform's ----------------------------------------------------------------------


def _queue(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        show(args.output, client.queues(), QUEUE_COLUMNS)
        return 0
    if not args.name:
        raise Failed(f"queues {args.action} needs a queue's name", EXIT_USAGE)
    show(args.output, getattr(client, f"{args.action}_queue")(args.name))
    return 0


def _forget(client: Client, args: argparse.Namespace) -> int:
    if not args.name:
        raise Failed("kinds forget needs a kind's name", EXIT_USAGE)
    client.forget_kind(args.name)
    return 0


def _shown(call: Callable[[Client, argparse.Namespace], Any], columns: list[str]) -> Command:
    """A command that prints what one call answers."""

    def act(client: Client, args: argparse.Namespace) -> int:
        show(args.output, call(client, args), columns)
        return 0

    return act


_get = _shown(lambda c, a: c.get(a.id), [])
# Each command line, by its command and action, and what runs it.
COMMANDS: dict[tuple[str, str | None], Command] = {
    ("tasks", "submit"): _submit,
    ("submit", None): _submit,
    ("tasks", "get"): _get,
    ("get", None): _get,
    ("tasks", "attempts"): _shown(lambda c, a: c.attempts(a.id), ATTEMPT_COLUMNS),
    ("tasks", "logs"): _logs,
    ("tasks", "wait"): _wait,
    ("tasks", "list"): _list,
    ("tasks", "watch"): _watch,
    ("tasks", "cancel"): _bulk("cancel"),
    ("tasks", "retry"): _bulk("retry"),
    ("schedules", "list"): _shown(lambda c, a: list(c.schedules()), SCHEDULE_COLUMNS),
    ("schedules", "get"): _on_schedule("get"),
    ("schedules", "pause"): _on_schedule("pause"),
    ("schedules", "resume"): _on_schedule("resume"),
    ("schedules", "delete"): _on_schedule("delete"),
    ("schedules", "create"): _schedule_create,
    ("queues", "list"): _queue,
    ("queues", "pause"): _queue,
    ("queues", "resume"): _queue,
    ("workers", None): _shown(lambda c, a: c.workers(a.queue), WORKER_COLUMNS),
    ("kinds", "list"): _shown(lambda c, a: c.kinds(), KIND_COLUMNS),
    ("kinds", "forget"): _forget,
}
