"""The worker process: builds its clients, waits for the schema, works until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from services.core.kinds import check_queues, load_kinds
from services.core.loops import Parts, subscribe
from services.core.runtime import open_clients
from services.core.settings import Settings
from services.core.supervision import Supervisor
from services.worker.runner import Worker

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_worker(
    settings: Settings, supervisor: Supervisor | None = None
) -> AsyncIterator[Worker]:
    """A worker with its own engine and broker connection, closed on exit; registered (its
    kinds, its row in the worker registry) before it is given, removed on exit."""
    kinds = load_kinds(settings.task_modules)
    check_queues(kinds, settings.queue_map())
    # Its statements have one shape each: planned once per connection.
    async with open_clients(settings, generic_plans=True) as clients:
        subscribe(Parts(settings, clients.store))
        worker = Worker(settings, clients.store, clients.broker, kinds, supervisor)
        await worker.presence.register()
        try:
            yield worker
        finally:
            await worker.presence.leave()


def stop_on_signals(stop: callable) -> None:  # type: ignore[valid-type]
    """Call `stop` on SIGTERM and SIGINT: the drain begins."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        """Probes and scrapes every few seconds: not worth a log line each."""


def serve_metrics(port: int, supervisor: Supervisor) -> None:
    """Serve /metrics and /health/live on `port` from a thread of their own.

    /health/live answers 503 while a loop of the worker keeps failing (the heartbeat,
    the consumer), so that Kubernetes restarts a worker that stopped working.
    """
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/health/live":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        failing = supervisor.failing()
        body = {"status": "failing", "failing": failing} if failing else {"status": "ok"}
        start_response(
            "503 Service Unavailable" if failing else "200 OK",
            [("Content-Type", "application/json")],
        )
        return [json.dumps(body).encode()]

    server = make_server("0.0.0.0", port, app, ThreadingWSGIServer, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


async def run_worker(settings: Settings) -> None:
    """Serve metrics, work until SIGTERM or SIGINT, then drain and return."""
    supervisor = Supervisor()
    if settings.worker_metrics_port:  # live while it waits for the schema too
        serve_metrics(settings.worker_metrics_port, supervisor)
    async with open_worker(settings, supervisor) as worker:
        stop_on_signals(worker.stop)
        logger.info(
            "worker %s taking up to %d tasks at a time",
            worker.worker_id,
            settings.worker_concurrency,
        )
        await worker.run()
