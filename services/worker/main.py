"""The worker process: builds its clients, waits for the schema, works until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from prometheus_client import start_http_server

from services.core.kinds import load_kinds
from services.core.runtime import open_clients
from services.core.settings import Settings
from services.worker.runner import Worker

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_worker(settings: Settings) -> AsyncIterator[Worker]:
    """A worker with its own engine and broker connection, closed on exit."""
    async with open_clients(settings) as clients:
        yield Worker(settings, clients.store, clients.broker, load_kinds(settings.task_modules))


def stop_on_signals(stop: callable) -> None:  # type: ignore[valid-type]
    """Call `stop` on SIGTERM and SIGINT: the drain begins."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)


async def run_worker(settings: Settings) -> None:
    """Serve metrics, work until SIGTERM or SIGINT, then drain and return."""
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
    async with open_worker(settings) as worker:
        stop_on_signals(worker.stop)
        logger.info("worker %s taking up to %d tasks at a time", worker.worker_id,
                    settings.worker_concurrency)
        await worker.run()
