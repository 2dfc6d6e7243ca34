"""The `conveyor` command: every process of the service, and a client of its API.

The client commands are conveyor_client's (`conveyorctl` has the same ones). Parsing the
command line, `--version`, `--help` and the client commands import nothing of the server:
the settings, logging, tracing, the database and the web framework are imported when a
server command (`servers.py`) or a key command (`keys.py`) runs. A server that cannot
start says why in one line on stderr and exits 1 (`--debug`, or CONVEYOR_LOG_LEVEL=DEBUG,
shows the traceback first).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from services.cli.keys import add_key_commands

PROG = "conveyor"
SubParsers = argparse._SubParsersAction  # argparse names no public type for it
# The server commands and their help.
SERVERS = {
    "api": "serve the HTTP API (and its outbox relay)",
    "worker": "run tasks; drains on SIGTERM",
    "relay": "publish due tasks to RabbitMQ, on its own",
    "recover": "hand back tasks whose lease expired, every RECOVERY_INTERVAL_SECONDS",
    "operator": "the Kubernetes operator: recovery that watches worker pods",
    "migrate": "create the database if needed and migrate it to the latest revision",
    "dev": "migrate, then run the API, the relay and a worker in one process",
}
# How long `migrate` waits for PostgreSQL to come up (as in a new cluster), and `dev` (a
# laptop's PostgreSQL is up already, or the command had better say at once that it is not).
DATABASE_PATIENCE = {"migrate": 120.0, "dev": 0.0}
# The client commands' names, for a `conveyor` installed without conveyor-client.
CLIENT_COMMANDS = frozenset({"tasks", "submit", "get", "schedules", "queues", "workers", "kinds"})
EXIT_NO_CLIENT = 5


class _Version(argparse.Action):
    """`--version`: the installed distribution's version, looked up only when asked for
    (importlib.metadata alone takes longer to import than the rest of the command line)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **_: Any) -> None:
        super().__init__(
            option_strings, argparse.SUPPRESS, nargs=0, help="show the version and exit"
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("conveyor")
        except PackageNotFoundError:
            found = "unknown"
        print(f"{PROG} {found}")
        parser.exit()


def _client() -> ModuleType | None:
    """conveyor_client's command line, or None when conveyor-client is not installed."""
    try:
        from conveyor_client import cli
    except ImportError:
        return None
    return cli


def _add_servers(commands: SubParsers[argparse.ArgumentParser]) -> None:
    for name, text in SERVERS.items():
        server = commands.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}.")
        server.add_argument(
            "--debug", action="store_true", help="show the traceback when it cannot start"
        )
        if name == "api":
            server.add_argument(
                "--processes",
                type=int,
                default=None,
                metavar="N",
                help="serve with N processes on one port, to use N cores "
                "(default: CONVEYOR_API_PROCESSES, else 1)",
            )
        if name in DATABASE_PATIENCE:
            server.add_argument(
                "--wait-for-database",
                type=float,
                default=DATABASE_PATIENCE[name],
                metavar="SECONDS",
                help="how long to wait for PostgreSQL to come up "
                f"(default {DATABASE_PATIENCE[name]:g})",
            )


def _add_missing_client(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """The client commands' names, saying what to install, when the client is missing."""
    for name in sorted(CLIENT_COMMANDS):
        missing = commands.add_parser(name, help="(needs conveyor-client)")
        missing.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def parser(client: ModuleType | None) -> argparse.ArgumentParser:
    """The `conveyor` command line: the server's commands, `client`'s and the keys'."""
    parse = argparse.ArgumentParser(
        prog=PROG,
        description="Every process of Conveyor, and a client of its API (the client "
        "commands are also conveyor-client's own command, conveyorctl).",
        epilog="Exit codes of the client commands: see `conveyor tasks --help`. Shell "
        'completion: eval "$(register-python-argcomplete conveyor)".',
    )
    parse.add_argument("--version", action=_Version)
    commands = parse.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_servers(commands)
    if client is None:
        _add_missing_client(commands)
    else:
        client.add_commands(commands)
    add_key_commands(commands)
    return parse


def _complete(parse: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request, when this run is one."""
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete

        argcomplete.autocomplete(parse)


def _run_client(client: ModuleType | None, args: argparse.Namespace) -> int:
    if client is None:
        print(
            f"{PROG}: the client commands need conveyor-client: pip install 'conveyor[client]'",
            file=sys.stderr,
        )
        return EXIT_NO_CLIENT
    client.skip_unused()
    code: int = client.run(args, prog=PROG)
    return code


def _run_keys(args: argparse.Namespace) -> int:
    from services.cli.keys import run_keys

    return run_keys(args)


def _run_server(args: argparse.Namespace) -> int:
    """Run a server command until it ends; 1, after one line, if it cannot start."""
    from services.cli.servers import CannotStart, start

    try:
        start(args)
    except CannotStart as error:
        if args.debug or os.environ.get("CONVEYOR_LOG_LEVEL", "").upper() == "DEBUG":
            import traceback

            traceback.print_exception(error)
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `conveyor` command."""
    client = _client()
    parse = parser(client)
    _complete(parse)
    args = parse.parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        sys.exit(_run_client(client, args))
    if args.command == "keys":
        sys.exit(_run_keys(args))
    code = _run_server(args)
    if code:
        sys.exit(code)
