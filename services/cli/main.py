"""The `conveyor` command: every process of the service, and a client of its API."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

import argcomplete

from services.cli.client import add_client_commands
from services.cli.keys import add_key_commands, run_keys
from services.core.db.schema import ensure_database
from services.core.logs import configure_logging
from services.core.runtime import tune_gc
from services.core.settings import Settings
from services.core.telemetry.tracing import configure_tracing

logger = logging.getLogger("conveyor")
MIGRATE_PATIENCE = 120.0


def _migrate(settings: Settings) -> None:
    from services.core.db.migrate import upgrade

    asyncio.run(_reach_database(settings.database_url, MIGRATE_PATIENCE))
    upgrade(settings.database_url)
    logger.info("schema is at the latest revision")


async def _reach_database(database_url: str, patience: float) -> None:
    """Create the database if needed, waiting for PostgreSQL to come up (as in a new cluster)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return await ensure_database(database_url)
        except OSError as error:
            if time.monotonic() > deadline:
                raise
            logger.warning("PostgreSQL not reachable yet (%s); retrying", error)
            await asyncio.sleep(2)


def _api(settings: Settings) -> None:
    from services.api.app import create_app
    from services.api.server import serve

    serve(create_app(settings), settings)


def _worker(settings: Settings) -> None:
    from services.worker.main import run_worker

    asyncio.run(run_worker(settings))


def _relay(settings: Settings) -> None:
    from services.core.loops.processes import run_relay

    asyncio.run(run_relay(settings))


def _recover(settings: Settings) -> None:
    from services.core.loops.processes import run_recovery

    asyncio.run(run_recovery(settings))


def _operator(settings: Settings) -> None:
    from services.operator.main import run_operator

    asyncio.run(run_operator(settings))


def _dev(settings: Settings) -> None:
    _migrate(settings)
    loopback = settings.api_host in ("127.0.0.1", "::1", "localhost")
    if settings.auth_enabled and loopback and "CONVEYOR_AUTH_ENABLED" not in os.environ:
        # A laptop's API on loopback: no keys to make first. Set the variable to keep them.
        settings = settings.model_copy(update={"auth_enabled": False})
        logger.warning("API keys are off (CONVEYOR_AUTH_ENABLED=true turns them on)")
    asyncio.run(_serve_dev(settings))


async def _serve_dev(settings: Settings) -> None:
    """API (with its relay) and a worker in one process, until Ctrl-C."""
    import uvicorn

    from services.api.app import create_app
    from services.api.server import server_config
    from services.worker.main import open_worker

    server = uvicorn.Server(server_config(create_app(settings), settings))
    async with open_worker(settings) as worker:
        # uvicorn raises the signal that stopped it again once it is done: let that
        # signal start the worker's drain rather than end the process mid-task.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(worker.stop))
        working = asyncio.create_task(worker.run())
        logger.info(
            "Conveyor on http://%s:%d (docs at /docs)", settings.api_host, settings.api_port
        )
        await server.serve()  # returns on SIGINT or SIGTERM
        worker.stop()
        await working


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("conveyor")
    except PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor",
        description=__doc__,
        epilog="Exit codes of the client commands: see `conveyor tasks --help`. Shell "
        'completion: eval "$(register-python-argcomplete conveyor)".',
    )
    parser.add_argument("--version", action="version", version=f"conveyor {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in [
        ("api", "serve the HTTP API (and its outbox relay)"),
        ("worker", "run tasks; drains on SIGTERM"),
        ("relay", "publish due tasks to RabbitMQ, on its own"),
        ("recover", "hand back tasks whose lease expired, every RECOVERY_INTERVAL_SECONDS"),
        ("operator", "the Kubernetes operator: recovery that watches worker pods"),
        ("migrate", "create the database if needed and migrate it to the latest revision"),
        ("dev", "migrate, then run the API, the relay and a worker in one process"),
    ]:
        commands.add_parser(name, help=text)
    add_client_commands(commands)
    add_key_commands(commands)
    return parser


_SERVICES: dict[str, Callable[[Settings], None]] = {
    "api": _api,
    "worker": _worker,
    "relay": _relay,
    "recover": _recover,
    "operator": _operator,
    "migrate": _migrate,
    "dev": _dev,
}
CLIENT_COMMANDS = frozenset({"tasks", "submit", "get", "schedules", "queues", "workers", "kinds"})


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `conveyor` command."""
    parser = _parser()
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        from services.cli.client import run_client_command

        sys.exit(run_client_command(args))
    if args.command == "keys":
        sys.exit(run_keys(args))
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    configure_tracing(f"conveyor-{args.command}")
    tune_gc()
    _SERVICES[args.command](settings)
