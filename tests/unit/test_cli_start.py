"""The command lines start light: `conveyor --version`, its help and its client commands,
and `conveyorctl`, import nothing of the server; and every command, action and option
has its help."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from conveyor_client import cli
from conveyor_client.cli.arguments import MISSED

from services.cli.main import CLIENT_COMMANDS
from services.cli.main import parser as conveyor_parser
from services.core.domain import Missed

# What only a server command needs, and takes most of a second to import.
HEAVY = (
    "services.core.settings",
    "sqlalchemy",
    "fastapi",
    "pydantic_settings",
    "opentelemetry.sdk",
)
# Runs a command's main() as its script would, then prints the modules it imported.
SCRIPT = """
import contextlib, io, json, sys
from importlib import import_module

module, *argv = sys.argv[1:]
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        import_module(module).main(argv)
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""


def imported(module: str, *argv: str) -> set[str]:
    """The modules `python -m module argv...` imports, in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, module, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(done.stdout))


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY)}


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("services.cli", ["--version"]),
        ("services.cli", ["--help"]),
        ("services.cli", ["tasks", "--help"]),
        ("services.cli", ["schedules", "create", "--help"]),
        ("conveyor_client.cli", ["--help"]),
        ("conveyor_client.cli", ["--version"]),
    ],
)
def test_version_and_help_import_neither_the_server_nor_httpx(module: str, argv: list[str]) -> None:
    modules = imported(module, *argv)
    assert heavy(modules) == set()
    assert "httpx" not in modules and "asyncio" not in modules


@pytest.mark.parametrize("module", ["services.cli", "conveyor_client.cli"])
def test_a_client_command_imports_the_client_and_nothing_of_the_server(module: str) -> None:
    # Port 9 on this machine: discard, nobody listens; one try, so it fails at once.
    modules = imported(module, "tasks", "list", "--url", "http://127.0.0.1:9", "--retries", "1")
    assert "conveyor_client.client" in modules
    assert heavy(modules) == set()


def test_a_server_command_imports_the_server() -> None:
    modules = imported("services.cli", "api", "--help")
    assert heavy(modules) == set()  # its help alone does not
    assert "services.cli.servers" not in modules


def test_conveyor_runs_every_command_of_the_client() -> None:
    assert CLIENT_COMMANDS == cli.COMMANDS


def test_a_schedule_s_missed_choices_are_the_server_s() -> None:
    assert MISSED == tuple(missed.value for missed in Missed)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every parser under `parser`, by its command line ("conveyor tasks submit")."""
    found = {parser.prog: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.update(subcommands(child))
    return found


def helpless(parser: argparse.ArgumentParser) -> list[str]:
    """The arguments, and the sub-commands, of `parser` that have no help text."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):  # each of its choices has one
            listed = {choice.dest for choice in action._choices_actions if choice.help}
            missing += sorted(set(action.choices) - listed)
        elif not action.help:
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


@pytest.mark.parametrize("command", ["conveyor", "conveyorctl"])
def test_every_command_action_and_option_has_its_help(command: str) -> None:
    parser = conveyor_parser(cli) if command == "conveyor" else cli.parser()
    parsers = subcommands(parser)
    assert f"{command} schedules create" in parsers
    missing = {prog: helpless(each) for prog, each in parsers.items()}
    assert {prog: names for prog, names in missing.items() if names} == {}
