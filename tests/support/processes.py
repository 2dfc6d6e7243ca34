"""`conveyor` commands as real processes, for tests that signal, kill or fuzz them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy.engine import make_url

from services.core.settings import Settings
from tests.support.env import ADMIN_URL, AMQP_URL, drop_database, settings_env
from tests.support.services import free_port


def start_process(
    settings: Settings, command: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`conveyor <command>`, with `env` added to its environment; its log goes to a file (a
    pipe nobody reads would block it)."""
    log = tempfile.NamedTemporaryFile("w+", prefix=f"conveyor-{command}-", suffix=".log")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", command],
        env={**settings_env(settings), **(env or {})},
        stderr=log,
        text=True,
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def start_worker_process(
    settings: Settings, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """A worker process, logging to a file."""
    return start_process(settings, "worker", env)


def worker_log(process: subprocess.Popen[str]) -> str:
    log = process.log  # type: ignore[attr-defined]
    log.seek(0)
    return str(log.read())


def wait_until_ready(url: str, process: subprocess.Popen[str], seconds: float = 60) -> None:
    """Poll `url`/health/ready until it answers 200; fail at once if `process` exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}: {_output(process)}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} was not ready after {seconds} s")


def _output(process: subprocess.Popen[str]) -> str:
    if hasattr(process, "log"):
        return worker_log(process)
    return process.stderr.read() if process.stderr else ""


@contextmanager
def running_dev(amqp_prefix: str, **env: str) -> Iterator[tuple[str, dict[str, str]]]:
    """`conveyor dev` on a free port, against a database it creates and migrates itself,
    with `env` added to its environment: its URL and that environment. At the end the
    database is dropped, and the process must have stopped cleanly, with no traceback."""
    name = f"conveyor_dev_{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": make_url(ADMIN_URL)
        .set(database=name)
        .render_as_string(hide_password=False),
        "CONVEYOR_AMQP_URL": AMQP_URL,
        "CONVEYOR_AMQP_PREFIX": f"{amqp_prefix}-dev",
        "CONVEYOR_API_PORT": str(port),
        "CONVEYOR_API_URL": url,
        **env,
    }
    command = [sys.executable, "-m", "services.cli", "dev"]
    process = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_ready(url, process)
        yield url, environment
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=30)
        drop_database(name)
    assert process.returncode == 0, log
    assert "Traceback" not in log, log
