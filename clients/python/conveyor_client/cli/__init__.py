# PYTHON_ARGCOMPLETE_OK
"""`conveyorctl`: Conveyor's API from a shell, with nothing more than this client installed.

    conveyorctl tasks submit "resize 42" --kind thumbnail --payload '{"id": 42}' --wait 60
    conveyorctl tasks list --status FAILED
    conveyorctl schedules pause nightly-report

The commands are `tasks`, `schedules`, `queues`, `workers` and `kinds` (and `submit` and
`get`, JSON out); the server's `conveyor` command has the same ones, built from here.
Every error is one line on stderr (`--debug` shows the traceback), and the exit code says
what happened:

    0  done (for wait: the task COMPLETED)
    1  the task ended FAILED or CANCELLED
    2  the command line is wrong
    3  the wait ended before the task did
    4  the API refused the request (4xx: not found, invalid, no scope, ...)
    5  the API failed or is unavailable (5xx, after the client's retries), or another error
    6  the API could not be reached

Parsing the command line imports neither httpx nor the client (`arguments`); a command
that runs does (`commands`). Shell completion uses argcomplete when it is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from conveyor_client.cli.arguments import COMMANDS, EXIT_CODES, add_commands

__all__ = ["COMMANDS", "add_commands", "complete", "main", "parser", "run", "skip_unused"]
PROG = "conveyorctl"
# What httpx and httpcore import when it is installed and a blocking client never uses:
# trio (httpcore's locks for trio's event loop) and httpx's own command line (rich, click).
# Where test or other tools brought them, they take longer to import than all the rest.
UNUSED = ("trio", "httpx._main")


def parser() -> argparse.ArgumentParser:
    """The `conveyorctl` command line."""
    from conveyor_client import __version__

    parse = argparse.ArgumentParser(
        prog=PROG,
        description="Conveyor's task API from a shell: submit, follow, cancel and re-run "
        "tasks, and manage schedules, queues and kinds.",
        epilog=f"{EXIT_CODES}\n\nshell completion (with argcomplete installed): "
        f'eval "$(register-python-argcomplete {PROG})"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parse.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parse.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(commands)
    return parse


def complete(parse: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request, when this run is one and argcomplete is
    installed; otherwise do nothing (and import nothing)."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parse)


def run(args: argparse.Namespace, prog: str = PROG) -> int:
    """Run a client command parsed by `add_commands`' parsers; answers its exit code. Its
    errors are one line on stderr, starting with `prog`."""
    from conveyor_client.cli.commands import execute

    return execute(args, prog)


def skip_unused() -> None:
    """Keep this process from importing `UNUSED`: for a command's process only, before
    anything imported httpx (never in a process that may need trio)."""
    for name in UNUSED:
        if name not in sys.modules:
            # A None entry is how Python marks a module not to import: httpx and httpcore
            # then go on as they do where it is not installed.
            sys.modules[name] = None  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `conveyorctl` command."""
    parse = parser()
    complete(parse)
    args = parse.parse_args(argv)
    skip_unused()
    sys.exit(run(args))
