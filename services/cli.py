"""The `conveyor` command: the composition root of every process."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from services.core.db.schema import ensure_database
from services.core.logs import configure_logging
from services.core.runtime import tune_gc
from services.core.settings import Settings
from services.core.telemetry.tracing import configure_tracing
from services.keys_cli import add_key_commands, run_keys

logger = logging.getLogger("conveyor")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
ACTIVE = {"NEW", "PENDING", "IN_PROGRESS"}
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
    from services.core.relay import run_relay

    asyncio.run(run_relay(settings))


def _recover(settings: Settings) -> None:
    from services.core.recovery import run_recovery

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


def _client(args: argparse.Namespace) -> httpx.Client:
    key = os.environ.get("CONVEYOR_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=args.url, timeout=10, headers=headers)


def _print(response: httpx.Response) -> int:
    print(json.dumps(response.json(), indent=2))
    return 0 if response.is_success else 1


def _submit(args: argparse.Namespace) -> int:
    body = {
        "title": args.title,
        "kind": args.kind,
        "priority": args.priority,
        "payload": json.loads(args.payload),
    }
    with _client(args) as client:
        response = client.post("/api/v1/tasks", json=body)
        if not response.is_success or not args.wait:
            return _print(response)
        return _wait(client, response.json()["id"], args.wait)


def _wait(client: httpx.Client, task_id: str, seconds: float) -> int:
    """Wait for the task without polling: the API answers once it is terminal."""
    deadline = time.monotonic() + seconds
    while True:
        left = min(deadline - time.monotonic(), 60)
        params = {"wait": f"{max(left, 0.001):.3f}"} if left > 0 else {}
        response = client.get(f"/api/v1/tasks/{task_id}", params=params, timeout=left + 10)
        if response.json().get("status") in TERMINAL or time.monotonic() >= deadline:
            _print(response)
            return 0 if response.json().get("status") == "COMPLETED" else 1


def _get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _print(client.get(f"/api/v1/tasks/{args.id}"))


def _attempts(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _print(client.get(f"/api/v1/tasks/{args.id}/attempts"))


def _retry(args: argparse.Namespace) -> int:
    """Run one FAILED or CANCELLED task again, or every one matching the filters."""
    with _client(args) as client:
        if args.id:
            return _print(client.post(f"/api/v1/tasks/{args.id}:retry"))
        return _print(client.post("/api/v1/tasks:retry", json=_selection(args)))


def _cancel(args: argparse.Namespace) -> int:
    """Cancel one task, or every one matching the filters."""
    with _client(args) as client:
        if args.id:
            return _print(client.delete(f"/api/v1/tasks/{args.id}"))
        return _print(client.post("/api/v1/tasks:cancel", json=_selection(args)))


def _selection(args: argparse.Namespace) -> dict[str, object]:
    """The filters of a bulk action; refusing to act on every task unless --all says so."""
    fields = {
        "status": args.status,
        "priority": args.priority,
        "kind": args.kind,
        "queue": args.queue,
        "created_after": args.created_after,
        "created_before": args.created_before,
    }
    chosen = {name: value for name, value in fields.items() if value}
    if not chosen and not args.all:
        raise SystemExit("give a task id, filters (--status, --kind, ...), or --all")
    return chosen


def _schedules(args: argparse.Namespace) -> int:
    """List, show, create, pause, resume or delete schedules."""
    with _client(args) as client:
        if args.action == "list":
            return _print(client.get("/api/v1/schedules", params={"limit": 100}))
        if args.action == "create":
            body = {
                "name": args.name,
                "cron": args.cron,
                "timezone": args.timezone,
                "missed": args.missed,
                "task": {
                    "title": args.title or args.name,
                    "kind": args.kind,
                    "priority": args.priority,
                    "payload": json.loads(args.payload),
                },
            }
            return _print(client.post("/api/v1/schedules", json=body))
        path = f"/api/v1/schedules/{args.id}"
        if args.action == "get":
            return _print(client.get(path))
        if args.action == "delete":
            response = client.delete(path)
            return 0 if response.status_code == 204 else _print(response)
        return _print(client.post(f"{path}:{args.action}"))


def _queues(args: argparse.Namespace) -> int:
    """List the queues, or pause or resume one (CONVEYOR_API_KEY must hold platform)."""
    with _client(args) as client:
        if args.action == "list":
            return _print(client.get("/api/v1/queues"))
        if not args.name:
            print(f"conveyor queues {args.action} needs a queue's name", file=sys.stderr)
            return 2
        return _print(client.post(f"/api/v1/queues/{args.name}:{args.action}"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
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
    url = os.environ.get("CONVEYOR_API_URL", "http://127.0.0.1:8000")
    submit = commands.add_parser("submit", help="submit a task")
    submit.add_argument("title")
    submit.add_argument("--kind", default="demo")
    submit.add_argument("--priority", default="MEDIUM", choices=["LOW", "MEDIUM", "HIGH"])
    submit.add_argument("--payload", default="{}", help="a JSON object")
    submit.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait up to SECONDS for a terminal status",
    )
    submit.add_argument("--url", default=url)
    get = commands.add_parser("get", help="show a task")
    get.add_argument("id")
    get.add_argument("--url", default=url)
    attempts = commands.add_parser("attempts", help="show a task's attempts")
    attempts.add_argument("id")
    attempts.add_argument("--url", default=url)
    for name, text in [
        ("retry", "run a FAILED or CANCELLED task again, or every one matching filters"),
        ("cancel", "cancel a task, or every one matching filters"),
    ]:
        action = commands.add_parser(name, help=text)
        action.add_argument("id", nargs="?")
        action.add_argument("--status", action="append", choices=sorted(TERMINAL | ACTIVE))
        action.add_argument("--priority", action="append", choices=["LOW", "MEDIUM", "HIGH"])
        action.add_argument("--kind")
        action.add_argument("--queue")
        action.add_argument("--created-after", metavar="TIME", help="RFC 3339")
        action.add_argument("--created-before", metavar="TIME", help="RFC 3339")
        action.add_argument("--all", action="store_true", help="every task, when no filter")
        action.add_argument("--url", default=url)
    _add_schedule_commands(commands, url)
    queues = commands.add_parser(
        "queues", help="list the queues, or pause or resume one (a platform key)"
    )
    queues.add_argument("action", choices=["list", "pause", "resume"], nargs="?", default="list")
    queues.add_argument("name", nargs="?")
    queues.add_argument("--url", default=url)
    add_key_commands(commands)
    return parser


def _add_schedule_commands(commands: argparse._SubParsersAction[Any], url: str) -> None:
    schedules = commands.add_parser("schedules", help="list, show, create, pause or delete")
    actions = schedules.add_subparsers(dest="action")
    actions.add_parser("list").add_argument("--url", default=url)
    for name in ("get", "pause", "resume", "delete"):
        one = actions.add_parser(name)
        one.add_argument("id")
        one.add_argument("--url", default=url)
    create = actions.add_parser("create", help="a task at each due time of CRON")
    create.add_argument("name")
    create.add_argument("cron", help="five fields, or six with the seconds first")
    create.add_argument("--timezone", default="UTC", help="an IANA name, such as Europe/Berlin")
    create.add_argument("--missed", default="skip", choices=["skip", "run_once"])
    create.add_argument("--title", help="the tasks' title (default: the name)")
    create.add_argument("--kind", default="demo")
    create.add_argument("--priority", default="MEDIUM", choices=["LOW", "MEDIUM", "HIGH"])
    create.add_argument("--payload", default="{}", help="a JSON object")
    create.add_argument("--url", default=url)
    schedules.set_defaults(action="list", url=url)


_SERVICES: dict[str, Callable[[Settings], None]] = {
    "api": _api,
    "worker": _worker,
    "relay": _relay,
    "recover": _recover,
    "operator": _operator,
    "migrate": _migrate,
    "dev": _dev,
}
_CLIENTS: dict[str, Callable[[argparse.Namespace], int]] = {
    "submit": _submit,
    "get": _get,
    "attempts": _attempts,
    "retry": _retry,
    "cancel": _cancel,
    "schedules": _schedules,
    "queues": _queues,
    "keys": run_keys,
}


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `conveyor` command."""
    args = _parser().parse_args(argv)
    if args.command in _CLIENTS:
        sys.exit(_CLIENTS[args.command](args))
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    configure_tracing(f"conveyor-{args.command}")
    tune_gc()
    _SERVICES[args.command](settings)


if __name__ == "__main__":
    main()
