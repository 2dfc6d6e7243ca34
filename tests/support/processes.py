"""`conveyor` commands as real processes, for tests that signal, kill or fuzz them."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

import httpx

from services.core.settings import Settings
from tests.support.env import settings_env


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
