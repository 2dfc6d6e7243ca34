"""Run the real API and worker inside the test's event loop, against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from services.api.app import create_app
from services.core.settings import Settings
from services.worker.main import open_worker
from services.worker.runner import Worker

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running_api(
    settings: Settings, *, ready: bool = True, app: ASGIApp | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A uvicorn server of `app` (the API of `settings`, by default) on a free port, and a
    client for it, once it takes requests."""
    port = free_port()
    config = uvicorn.Config(
        app or create_app(settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while ready and (await client.get("/api/v1/tasks?limit=1")).status_code == 503:
                await asyncio.sleep(0.01)
            yield client
    finally:
        server.should_exit = True
        await serving


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    """A worker running in the background; drained when the block ends."""
    async with open_worker(settings) as worker:
        working = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            await working


async def register_kinds(settings: Settings) -> None:
    """The kinds of the settings' task modules registered, as a worker that started and
    left (a pool scaled to zero since) leaves them: the API takes their tasks, which wait."""
    async with open_worker(settings):
        pass


async def submit(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"title": "a task", **fields}
    response = await client.post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def wait_for(
    client: httpx.AsyncClient, task_id: str, statuses: set[str] = TERMINAL, timeout: float = 15
) -> dict[str, Any]:
    """Poll a task until its status is one of `statuses`; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        task = (await client.get(f"/api/v1/tasks/{task_id}")).json()
        if task["status"] in statuses:
            return task  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"task still {task['status']}: {task}"
        await asyncio.sleep(0.02)
