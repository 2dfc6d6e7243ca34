"""`conveyor tasks|schedules|queues|workers|kinds`: the client commands, built on conveyor_client.

Every error is one line on stderr (`--debug` shows the traceback), and the exit code says
what happened:

    0  done (for wait: the task COMPLETED)
    1  the task ended FAILED or CANCELLED
    2  the command line is wrong
    3  the wait ended before the task did
    4  the API refused the request (4xx: not found, invalid, no scope, ...)
    5  the API failed or is unavailable (5xx, after the client's retries), or another error
    6  the API could not be reached
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.core.domain import Missed, Priority, Status

if TYPE_CHECKING:  # imported when a client command runs: the servers never need it
    from conveyor_client import Client

EXIT_TASK_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_REFUSED, EXIT_SERVER, EXIT_UNREACHABLE = range(
    1, 7
)
STATUSES = [status.value for status in Status]
PRIORITIES = [priority.value for priority in Priority]
TASK_COLUMNS = ["id", "status", "priority", "kind", "queue", "attempts", "created_at", "title"]


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`tasks`, `schedules`, `queues`, `workers` and `kinds`, and `submit` and `get` as they always
    were."""
    common = _common("table")

    tasks = commands.add_parser("tasks", help="submit, find, wait for, cancel, re-run tasks")
    actions = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = actions.add_parser("submit", parents=[common], help="submit a task")
    _task_fields(submit)
    for name in ("get", "attempts"):
        one = actions.add_parser(name, parents=[common], help=f"show a task's {name}")
        one.add_argument("id")
    logs = actions.add_parser("logs", parents=[common], help="show what a task's handler logged")
    logs.add_argument("id")
    logs.add_argument("--attempt", type=int, metavar="N", help="its attempt N (default: the last)")
    wait = actions.add_parser("wait", parents=[common], help="wait for a task to finish")
    wait.add_argument("id")
    wait.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    listing = actions.add_parser("list", parents=[common], help="list tasks, newest first")
    _filters(listing)
    listing.add_argument("--limit", type=int, default=20, help="at most this many (0: all)")
    watch = actions.add_parser("watch", parents=[common], help="a live table of tasks")
    _filters(watch)
    watch.add_argument("--limit", type=int, default=20)
    watch.add_argument("--interval", type=float, default=2.0, metavar="SECONDS")
    for name, text in [
        ("cancel", "cancel a task, or every task matching the filters"),
        ("retry", "run a FAILED or CANCELLED task again, or every one matching the filters"),
    ]:
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("id", nargs="?")
        _filters(action)
        action.add_argument("--all", action="store_true", help="every task, when no filter")

    # The first commands, kept as they were (JSON out): `conveyor submit` and `conveyor get`.
    as_before = _common("json")
    _task_fields(commands.add_parser("submit", parents=[as_before], help="= tasks submit -o json"))
    commands.add_parser("get", parents=[as_before], help="= tasks get -o json").add_argument("id")

    schedules = commands.add_parser("schedules", help="list, show, create, pause, delete")
    schedule_actions = schedules.add_subparsers(dest="action", metavar="ACTION")
    schedule_actions.add_parser("list", parents=[common])
    for name in ("get", "pause", "resume", "delete"):
        schedule_actions.add_parser(name, parents=[common]).add_argument("id")
    create = schedule_actions.add_parser(
        "create", parents=[common], help="a task at each due time of CRON"
    )
    create.add_argument("name")
    create.add_argument("cron", help="five fields, or six with the seconds first")
    create.add_argument("--timezone", default="UTC", help="an IANA name, such as Europe/Berlin")
    create.add_argument("--missed", default=Missed.SKIP.value, choices=[m.value for m in Missed])
    create.add_argument("--title", help="the tasks' title (default: the name)")
    create.add_argument("--kind", default="demo")
    create.add_argument("--priority", default=Priority.MEDIUM.value, choices=PRIORITIES)
    create.add_argument("--payload", default="{}", type=_json_object, help="a JSON object")
    schedules.set_defaults(action="list", url=None, output="table", debug=False, retries=6)

    queues = commands.add_parser("queues", parents=[common], help="list, pause, resume (platform)")
    queues.add_argument("action", choices=["list", "pause", "resume"], nargs="?", default="list")
    queues.add_argument("name", nargs="?")

    workers = commands.add_parser("workers", parents=[common], help="list workers (platform)")
    workers.add_argument("--queue", help="only the workers that consume it")

    kinds = commands.add_parser(
        "kinds", parents=[common], help="list the kinds workers registered (-o json: schemas)"
    )
    kinds.add_argument(
        "action",
        choices=["list", "forget"],
        nargs="?",
        default="list",
        help="forget: refuse from now on a kind no worker runs (platform)",
    )
    kinds.add_argument("name", nargs="?")


def _common(output: str) -> argparse.ArgumentParser:
    """The options of every client command. A parser of its own for each default: parents
    share their options' objects, so one default set later would change them all."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the API (default: CONVEYOR_API_URL, else 127.0.0.1:8000)")
    common.add_argument("--output", "-o", choices=["table", "json"], default=output)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument(
        "--retries",
        type=int,
        default=6,
        metavar="N",
        help="tries in all on 429, 503 and connection errors (default 6)",
    )
    return common


def _task_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("title")
    parser.add_argument("--kind", default="demo")
    parser.add_argument("--priority", default=Priority.MEDIUM.value, choices=PRIORITIES)
    parser.add_argument("--payload", default="{}", type=_json_object, help="a JSON object")
    parser.add_argument("--queue")
    parser.add_argument("--max-attempts", type=int)
    parser.add_argument("--timeout-seconds", type=float)
    parser.add_argument(
        "--at", dest="scheduled_at", metavar="TIME", help="start no sooner (RFC 3339)"
    )
    parser.add_argument("--idempotency-key", help="default: one made for this submit")
    parser.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="then wait")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", action="append", choices=STATUSES)
    parser.add_argument("--priority", action="append", choices=PRIORITIES)
    parser.add_argument("--kind")
    parser.add_argument("--queue")
    parser.add_argument("--title", help="text the title holds")
    parser.add_argument("--created-after", metavar="TIME", help="RFC 3339")
    parser.add_argument("--created-before", metavar="TIME", help="RFC 3339")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"not JSON: {error.msg} at character {error.pos}"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, such as '{\"n\": 1}'")
    return value


def run_client_command(args: argparse.Namespace) -> int:
    """Run a client command; every failure becomes one line on stderr and an exit code."""
    try:
        from conveyor_client import Client, ProblemError, Retry, Unreachable
    except ImportError:
        print(
            "conveyor: the client commands need conveyor-client: pip install 'conveyor[client]'",
            file=sys.stderr,
        )
        return EXIT_SERVER

    try:
        with Client(args.url, retry=Retry(attempts=max(args.retries, 1))) as client:
            return _COMMANDS[(args.command, getattr(args, "action", None))](client, args)
    except ProblemError as error:
        _fail(args, f"{error} (HTTP {error.status} {error.type.rpartition(':')[2]})", error)
        return EXIT_REFUSED if error.status < 500 else EXIT_SERVER
    except Unreachable as error:
        _fail(
            args,
            f"cannot reach the API at {args.url or 'CONVEYOR_API_URL'}: {error.__cause__!r}",
            error,
        )
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - whatever it is, one line and a code
        _fail(args, f"{type(error).__name__}: {error}", error)
        return EXIT_SERVER


def _fail(args: argparse.Namespace, line: str, error: Exception) -> None:
    """One line on stderr; with --debug, the traceback first (the exit code stays)."""
    if args.debug:
        traceback.print_exception(error)
    print(f"conveyor: {line}", file=sys.stderr)


# --- output --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Exception):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def table(rows: Iterable[Any], columns: Sequence[str]) -> str:
    """Records as aligned columns, a header first."""
    cells = [[_cell(getattr(row, c, None)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [[c.upper() for c in columns], *cells]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _show(args: argparse.Namespace, value: Any, columns: Sequence[str] | None = None) -> None:
    if args.output == "json":
        print(json.dumps(_plain(value), indent=2))
    elif isinstance(value, list):
        print(table(value, columns or []))
    else:
        width = max(len(k) for k in _plain(value))
        for key, item in _plain(value).items():
            print(f"{key.ljust(width)}  {_cell(item)}")


# --- commands ----------------------------------------------------------------------------


def _outcome(task: Any) -> int:
    if task.status == Status.COMPLETED:
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
        _show(args, task)
        return _outcome(task)
    _show(args, task)
    return 0


def _chosen(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "status": args.status,
        "priority": args.priority,
        "kind": args.kind,
        "queue": args.queue,
        "title": args.title,
        "created_after": args.created_after,
        "created_before": args.created_before,
    }


def _list(client: Client, args: argparse.Namespace) -> int:
    tasks = []
    for task in client.list(page_size=min(args.limit or 100, 100), **_chosen(args)):
        tasks.append(task)
        if args.limit and len(tasks) >= args.limit:
            break
    _show(args, tasks, TASK_COLUMNS)
    return 0


def _watch(client: Client, args: argparse.Namespace) -> int:
    """The newest tasks matching the filters, redrawn every interval until Ctrl-C."""
    while True:
        tasks = []
        for task in client.list(page_size=min(args.limit, 100), **_chosen(args)):
            tasks.append(task)
            if len(tasks) >= args.limit:
                break
        if args.output == "json":
            print(json.dumps(_plain(tasks)), flush=True)
        else:
            stamp = datetime.now().strftime("%H:%M:%S")
            heading = f"{len(tasks)} newest task(s) at {stamp}, every {args.interval:g} s (Ctrl-C)"
            print(f"\x1b[H\x1b[2J{heading}\n\n{table(tasks, TASK_COLUMNS)}", flush=True)
        time.sleep(args.interval)


def _bulk(name: str) -> Callable[[Client, argparse.Namespace], int]:
    def act(client: Client, args: argparse.Namespace) -> int:
        if args.id:
            _show(args, getattr(client, name)(args.id))
            return 0
        chosen = {k: v for k, v in _chosen(args).items() if v}
        if not chosen and not args.all:
            print(
                "conveyor: give a task id, filters (--status, --kind, ...), or --all",
                file=sys.stderr,
            )
            return EXIT_USAGE
        _show(args, getattr(client, f"{name}_matching")(**chosen))
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
    _show(args, made)
    return 0


def _queue(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        _show(
            args, client.queues(), ["name", "paused", "queued", "running", "oldest_ready_seconds"]
        )
        return 0
    if not args.name:
        print(f"conveyor: queues {args.action} needs a queue's name", file=sys.stderr)
        return EXIT_USAGE
    _show(args, getattr(client, f"{args.action}_queue")(args.name))
    return 0


def _logs(client: Client, args: argparse.Namespace) -> int:
    """The lines the handler logged in one attempt, a line each (as JSON with -o json)."""
    attempt = args.attempt if args.attempt is not None else client.get(args.id).attempts
    if attempt < 1:
        print(f"conveyor: task {args.id} has not started yet", file=sys.stderr)
        return EXIT_REFUSED
    logs = client.attempt_logs(args.id, attempt)
    if args.output == "json":
        print(json.dumps(_plain(logs), indent=2))
        return 0
    if logs.dropped:
        print(f"({logs.dropped} earlier line(s) not kept)")
    for line in logs.lines:
        print(f"{line.logged_at.isoformat(timespec='milliseconds')} {line.level:<7} {line.message}")
    return 0


def _wait(client: Client, args: argparse.Namespace) -> int:
    task = client.wait(args.id, timeout=args.timeout)
    _show(args, task)
    return _outcome(task)


def _shown(
    call: Callable[[Client, argparse.Namespace], Any], columns: Sequence[str] | None = None
) -> Callable[[Client, argparse.Namespace], int]:
    def show(client: Client, args: argparse.Namespace) -> int:
        _show(args, call(client, args), columns)
        return 0

    return show


def _deleted(client: Client, args: argparse.Namespace) -> int:
    client.delete_schedule(args.id)
    return 0


def _forget(client: Client, args: argparse.Namespace) -> int:
    if not args.name:
        print("conveyor: kinds forget needs a kind's name", file=sys.stderr)
        return EXIT_USAGE
    client.forget_kind(args.name)
    return 0


SCHEDULE_COLUMNS = ["id", "name", "cron", "timezone", "paused", "next_run_at", "last_run_at"]
KIND_COLUMNS = ["name", "queue", "workers", "builtin", "description"]
WORKER_COLUMNS = ["id", "state", "running", "concurrency", "queues", "version", "last_seen_at"]
_COMMANDS: dict[tuple[str, str | None], Callable[[Client, argparse.Namespace], int]] = {
    ("tasks", "submit"): _submit,
    ("submit", None): _submit,
    ("tasks", "get"): _shown(lambda c, a: c.get(a.id)),
    ("get", None): _shown(lambda c, a: c.get(a.id)),
    ("tasks", "attempts"): _shown(
        lambda c, a: c.attempts(a.id),
        ["attempt", "outcome", "worker_id", "started_at", "duration_seconds", "error"],
    ),
    ("tasks", "logs"): _logs,
    ("tasks", "wait"): _wait,
    ("tasks", "list"): _list,
    ("tasks", "watch"): _watch,
    ("tasks", "cancel"): _bulk("cancel"),
    ("tasks", "retry"): _bulk("retry"),
    ("schedules", "list"): _shown(lambda c, a: list(c.schedules()), SCHEDULE_COLUMNS),
    ("schedules", "get"): _shown(lambda c, a: c.get_schedule(a.id)),
    ("schedules", "pause"): _shown(lambda c, a: c.pause_schedule(a.id)),
    ("schedules", "resume"): _shown(lambda c, a: c.resume_schedule(a.id)),
    ("schedules", "delete"): _deleted,
    ("schedules", "create"): _schedule_create,
    ("queues", "list"): _queue,
    ("queues", "pause"): _queue,
    ("queues", "resume"): _queue,
    ("workers", None): _shown(lambda c, a: c.workers(a.queue), WORKER_COLUMNS),
    ("kinds", "list"): _shown(lambda c, a: c.kinds(), KIND_COLUMNS),
    ("kinds", "forget"): _forget,
}
