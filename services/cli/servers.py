"""The server commands of `conveyor` (api, worker, relay, recover, operator, migrate, dev):
imported only when one of them runs, with the settings, logging and tracing they need.

A server that cannot start (its port in use, PostgreSQL out of reach, a wrong setting)
raises CannotStart, whose one line the command prints instead of a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

import asyncpg
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from services.core.db.schema import ensure_database
from services.core.logs import configure_logging
from services.core.runtime import run, tune_gc
from services.core.settings import Settings
from services.core.telemetry.tracing import configure_tracing

logger = logging.getLogger("conveyor")
# The longest one attempt to connect to PostgreSQL may take.
CONNECT_TIMEOUT = 10.0
# Between two attempts to reach PostgreSQL.
RETRY_PAUSE = 2.0


class CannotStart(Exception):
    """A server command cannot start, for the reason its one line says."""


def start(args: argparse.Namespace) -> None:
    """Run the server command `args.command`: settings, logging, tracing, then the process."""
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    configure_tracing(f"conveyor-{args.command}")
    tune_gc()
    SERVICES[args.command](settings, args)


def _settings() -> Settings:
    """The settings from the environment; CannotStart naming each setting that is wrong."""
    try:
        return Settings()
    except ValidationError as error:
        wrong = "; ".join(
            f"CONVEYOR_{'_'.join(map(str, problem['loc'])).upper() or 'SETTINGS'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise CannotStart(f"invalid settings: {wrong}") from error


# --- PostgreSQL and the API's port -------------------------------------------------------


def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    asyncio.run(_reach_database(settings.database_url, args.wait_for_database))
    from services.core.db.migrate import upgrade  # Alembic logs as it loads: not before

    upgrade(settings.database_url)
    logger.info("schema is at the latest revision")


async def _reach_database(database_url: str, patience: float) -> None:
    """Create the database if needed, waiting up to `patience` seconds for PostgreSQL to
    come up (as in a new cluster); CannotStart past that, or at once when PostgreSQL
    refuses the login or the URL is not one."""
    where = _database_address(database_url)
    deadline = time.monotonic() + patience
    for attempt in itertools.count(1):
        try:
            return await asyncio.wait_for(ensure_database(database_url), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            reason = str(error) or f"no answer within {CONNECT_TIMEOUT:g} s"
            left = deadline - time.monotonic()
            if left <= 0:
                raise CannotStart(f"cannot reach PostgreSQL at {where}: {reason}") from error
            if attempt == 1:  # said once: the wait ends in a line of its own either way
                logger.warning(
                    "PostgreSQL at %s not reachable yet (%s); trying again for up to %.0f s",
                    where,
                    reason,
                    left,
                )
            await asyncio.sleep(min(RETRY_PAUSE, left))
        except asyncpg.PostgresError as error:
            raise CannotStart(f"PostgreSQL at {where} refused: {error}") from error


def _database_address(database_url: str) -> str:
    """`host:port/database` of the URL, without its user and password."""
    try:
        url = make_url(database_url)
    except ArgumentError as error:
        raise CannotStart(f"CONVEYOR_DATABASE_URL is not a database URL: {error}") from error
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _listen(settings: Settings) -> socket.socket:
    """The API's socket, bound before anything starts: a port in use stops the command at
    once, in one line, rather than after the app has connected everywhere."""
    from services.api.server import bind

    host, port = settings.api_host, settings.api_port
    try:
        return bind(host, port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            line = f"port {port} is in use on {host} (CONVEYOR_API_PORT chooses another)"
        elif error.errno == errno.EACCES:
            line = f"cannot listen on {host}:{port}: permission denied"
        else:
            line = f"cannot listen on {host}:{port}: {error.strerror or error}"
        raise CannotStart(line) from error


# --- the processes -----------------------------------------------------------------------


def _api(settings: Settings, args: argparse.Namespace) -> None:
    from services.api.processes import inherited, serve_processes

    given = inherited()
    processes = args.processes or settings.api_processes
    if given is None and processes > 1:  # the parent of `processes` API processes
        listening = _listen(settings)
        where = f"http://{settings.api_host}:{settings.api_port}"
        logger.info("API on %s, %d processes", where, processes)
        raise SystemExit(serve_processes(listening, processes))
    if given is None:
        listening = _listen(settings)
        logger.info("API on http://%s:%d", settings.api_host, settings.api_port)
    else:
        listening, index = given
        if index > 0:  # the installation's loops run once, in process 0
            off = {"api_run_relay": False, "api_run_recovery": False, "api_run_retention": False}
            settings = settings.model_copy(update=off)
    from services.api.app import create_app
    from services.api.server import serve

    serve(create_app(settings), settings, listening)


def _worker(settings: Settings, args: argparse.Namespace) -> None:
    from services.worker.main import run_worker

    run(run_worker(settings))


def _relay(settings: Settings, args: argparse.Namespace) -> None:
    from services.core.loops.processes import run_relay

    run(run_relay(settings))


def _recover(settings: Settings, args: argparse.Namespace) -> None:
    from services.core.loops.processes import run_recovery

    run(run_recovery(settings))


def _operator(settings: Settings, args: argparse.Namespace) -> None:
    from services.operator.main import run_operator

    asyncio.run(run_operator(settings))


def _dev(settings: Settings, args: argparse.Namespace) -> None:
    listening = _listen(settings)
    _migrate(settings, args)
    loopback = settings.api_host in ("127.0.0.1", "::1", "localhost")
    if settings.auth_enabled and loopback and "CONVEYOR_AUTH_ENABLED" not in os.environ:
        # A laptop's API on loopback: no keys to make first. Set the variable to keep them.
        settings = settings.model_copy(update={"auth_enabled": False})
        logger.warning("API keys are off (CONVEYOR_AUTH_ENABLED=true turns them on)")
    run(_serve_dev(settings, listening))


async def _serve_dev(settings: Settings, listening: socket.socket) -> None:
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
        await server.serve(sockets=[listening])  # returns on SIGINT or SIGTERM
        worker.stop()
        await working


SERVICES: dict[str, Callable[[Settings, argparse.Namespace], None]] = {
    "api": _api,
    "worker": _worker,
    "relay": _relay,
    "recover": _recover,
    "operator": _operator,
    "migrate": _migrate,
    "dev": _dev,
}
