"""The client commands' arguments, every one with its help.

Light on purpose: building the parser imports neither httpx nor the client, so that
`--help`, shell completion and a wrong command line answer at once.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from conveyor_client.statuses import PRIORITIES, STATUSES

SubParsers = argparse._SubParsersAction  # argparse names no public type for it
# What a schedule does about due times that passed while no scheduler ran: nothing, or
# one task for the latest of them (the API's values; a test holds them to the server's).
MISSED = ("skip", "run_once")
# Tries in all on 429, 503 and connection errors. With the client's backoff (full jitter
# from 0.2 s, doubling) five tries wait at most 0.2 + 0.4 + 0.8 + 1.6 = 3 s in all, so an
# API that is down is reported within about 3 s, and one restarting is ridden out.
DEFAULT_TRIES = 5
EXIT_CODES = """exit codes:
  0  done (for wait: the task COMPLETED)
  1  the task ended FAILED or CANCELLED
  2  the command line is wrong
  3  the wait ended before the task did
  4  the API refused the request (4xx: not found, invalid, no scope, ...)
  5  the API failed or is unavailable (5xx, after the retries), or another error
  6  the API could not be reached"""
# The commands these arguments add, as the first word of a command line.
COMMANDS = frozenset({"tasks", "submit", "get", "schedules", "queues", "workers", "kinds"})


def add_commands(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """`tasks`, `schedules`, `queues`, `workers` and `kinds`, and `submit` and `get` as they
    always were (JSON out)."""
    _add_tasks(commands)
    as_before = _common("json")
    legacy = commands.add_parser(
        "submit", parents=[as_before], help="submit a task: tasks submit -o json"
    )
    _task_fields(legacy)
    legacy = commands.add_parser("get", parents=[as_before], help="show a task: tasks get -o json")
    legacy.add_argument("id", help="the task's id")
    _add_schedules(commands)
    _add_queues(commands)
    _add_workers(commands)
    _add_kinds(commands)


def _group(
    commands: SubParsers[argparse.ArgumentParser], name: str, text: str, **options: Any
) -> argparse.ArgumentParser:
    """A command whose help shows `text` and, after its options, the exit codes."""
    return commands.add_parser(
        name,
        help=text,
        description=f"{text[0].upper()}{text[1:]}.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **options,
    )


def _actions(parser: argparse.ArgumentParser) -> SubParsers[argparse.ArgumentParser]:
    return parser.add_subparsers(dest="action", metavar="ACTION", title="actions")


def _action(
    actions: SubParsers[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    """One action of a group, with the options of every client command."""
    return actions.add_parser(
        name,
        parents=[_common("table")],
        help=text,
        description=f"{text[0].upper()}{text[1:]}.",
    )


def _add_tasks(commands: SubParsers[argparse.ArgumentParser]) -> None:
    tasks = _group(commands, "tasks", "submit, find, wait for, cancel and re-run tasks")
    actions = _actions(tasks)
    actions.required = True
    _task_fields(_action(actions, "submit", "submit a task (and wait for it with --wait)"))
    _action(actions, "get", "show a task").add_argument("id", help="the task's id")
    _action(actions, "attempts", "show a task's attempts, the last one last").add_argument(
        "id", help="the task's id"
    )
    logs = _action(actions, "logs", "show what a task's handler logged in an attempt")
    logs.add_argument("id", help="the task's id")
    logs.add_argument("--attempt", type=int, metavar="N", help="its attempt N (default: the last)")
    wait = _action(actions, "wait", "wait for a task to finish, and show it")
    wait.add_argument("id", help="the task's id")
    wait.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop waiting after this long, exit 3 (default: wait until it ends)",
    )
    listing = _action(actions, "list", "list tasks matching the filters, newest first")
    _filters(listing)
    listing.add_argument("--limit", type=int, default=20, help="at most this many (0: all)")
    watch = _action(actions, "watch", "a live table of the newest tasks, until Ctrl-C")
    _filters(watch)
    watch.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    watch.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="redraw this often (default 2)",
    )
    for name, text in [
        ("cancel", "cancel a task, or every task matching the filters"),
        ("retry", "run a FAILED or CANCELLED task again, or every one matching the filters"),
    ]:
        action = _action(actions, name, text)
        action.add_argument("id", nargs="?", help="the task's id (else: the filters)")
        _filters(action)
        action.add_argument(
            "--all", action="store_true", help="every task, when no id and no filter"
        )


def _add_schedules(commands: SubParsers[argparse.ArgumentParser]) -> None:
    schedules = _group(
        commands,
        "schedules",
        "list, show, create, pause, resume and delete schedules (default: list)",
    )
    actions = _actions(schedules)
    # `schedules` alone lists them, with the options of every client command at their
    # defaults (set after the actions, or theirs, None, would win).
    schedules.set_defaults(action="list", **defaults("table"))
    _action(actions, "list", "list the schedules, by name")
    for name, text in [
        ("get", "show a schedule and its next due times"),
        ("pause", "stop making tasks (again is harmless)"),
        ("resume", "make tasks again, from the next due time on"),
        ("delete", "delete a schedule; the tasks it made stay"),
    ]:
        _action(actions, name, text).add_argument(
            "schedule", metavar="ID|NAME", help="the schedule's id, or its name"
        )
    create = _action(actions, "create", "make a task at each due time of CRON")
    create.add_argument("name", help="unique among the tenant's schedules")
    create.add_argument("cron", help="five fields, or six with the seconds first")
    create.add_argument("--timezone", default="UTC", help="an IANA name, such as Europe/Berlin")
    create.add_argument(
        "--missed",
        default="skip",
        choices=MISSED,
        help="due times passed while no scheduler ran: skip them, or run_once for the latest",
    )
    create.add_argument("--title", help="the tasks' title (default: the name)")
    create.add_argument("--kind", required=True, help="the tasks' kind (required)")
    create.add_argument(
        "--priority", default="MEDIUM", choices=PRIORITIES, help="the tasks' priority"
    )
    create.add_argument(
        "--payload", default="{}", type=json_object, help="the tasks' payload, a JSON object"
    )


def _add_queues(commands: SubParsers[argparse.ArgumentParser]) -> None:
    queues = _with_positional_actions(
        commands,
        "queues",
        "list, pause and resume the queues (a platform key)",
        {
            "list": "the queues, with their backlog (the default)",
            "pause": "start none of the queue's tasks until it is resumed",
            "resume": "start the queue's tasks again",
        },
    )
    queues.add_argument("name", nargs="?", metavar="NAME", help="the queue to pause or resume")


def _add_workers(commands: SubParsers[argparse.ArgumentParser]) -> None:
    workers = commands.add_parser(
        "workers",
        parents=[_common("table")],
        help="list the worker processes (a platform key)",
        description="List the worker processes: alive, draining or gone (a platform key).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    workers.add_argument("--queue", help="only the workers that consume it")


def _add_kinds(commands: SubParsers[argparse.ArgumentParser]) -> None:
    kinds = _with_positional_actions(
        commands,
        "kinds",
        "list the kinds workers registered (-o json: their schemas), or forget one",
        {
            "list": "the kinds the API takes, with their workers (the default)",
            "forget": "refuse from now on a kind no worker runs (a platform key)",
        },
    )
    kinds.add_argument("name", nargs="?", metavar="NAME", help="the kind to forget")


def _with_positional_actions(
    commands: SubParsers[argparse.ArgumentParser], name: str, text: str, actions: dict[str, str]
) -> argparse.ArgumentParser:
    """A command whose action is an optional first argument, so that its options may come
    before it (`queues -o json pause default`); its help lists the actions a line each."""
    command = commands.add_parser(
        name,
        parents=[_common("table")],
        help=text,
        description=f"{text[0].upper()}{text[1:]}.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    command.add_argument(
        "action",
        choices=list(actions),
        nargs="?",
        default=next(iter(actions)),
        metavar="ACTION",
        help="\n".join(f"{action}: {line}" for action, line in actions.items()),
    )
    return command


def defaults(output: str) -> dict[str, Any]:
    """The values of the options every client command has, when none is given."""
    return {"url": None, "key": None, "output": output, "debug": False, "retries": DEFAULT_TRIES}


def _common(output: str) -> argparse.ArgumentParser:
    """The options of every client command. A parser of its own for each default: parents
    share their options' objects, so one default set later would change them all."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the API (default: CONVEYOR_API_URL, else 127.0.0.1:8000)")
    common.add_argument("--key", help="the API key (default: CONVEYOR_API_KEY)")
    common.add_argument(
        "--output",
        "-o",
        choices=["table", "json"],
        default=output,
        help=f"how to print the answer (default: {output})",
    )
    common.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    common.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_TRIES,
        metavar="N",
        help=f"tries in all on 429, 503 and no connection (default {DEFAULT_TRIES}: 3 s at most)",
    )
    return common


def _task_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("title", help="the task's title")
    parser.add_argument(
        "--kind", required=True, help="the kind of task: which handler runs it (required)"
    )
    parser.add_argument("--priority", default="MEDIUM", choices=PRIORITIES, help="default MEDIUM")
    parser.add_argument(
        "--payload", default="{}", type=json_object, help="the handler's input, a JSON object"
    )
    parser.add_argument("--queue", help="the queue to run it on (default: its kind's)")
    parser.add_argument(
        "--max-attempts", type=int, metavar="N", help="tries in all before it fails"
    )
    parser.add_argument(
        "--timeout-seconds", type=float, metavar="SECONDS", help="the longest an attempt may run"
    )
    parser.add_argument(
        "--at", dest="scheduled_at", metavar="TIME", help="start no sooner (RFC 3339)"
    )
    parser.add_argument(
        "--idempotency-key", help="submits with the same key make one task (default: a new one)"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="then wait up to this long for it to finish (exit 1 if it fails, 3 if it runs on)",
    )


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status", action="append", choices=STATUSES, help="only these statuses (repeatable)"
    )
    parser.add_argument(
        "--priority",
        action="append",
        choices=PRIORITIES,
        help="only these priorities (repeatable)",
    )
    parser.add_argument("--kind", help="only tasks of this kind")
    parser.add_argument("--queue", help="only tasks on this queue")
    parser.add_argument("--title", help="only tasks whose title holds this text")
    parser.add_argument("--created-after", metavar="TIME", help="only tasks made after (RFC 3339)")
    parser.add_argument(
        "--created-before", metavar="TIME", help="only tasks made before (RFC 3339)"
    )


def json_object(text: str) -> dict[str, Any]:
    """A JSON object from the command line; anything else is a usage error (exit 2)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"not JSON: {error.msg} at character {error.pos}"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, such as '{\"n\": 1}'")
    return value
