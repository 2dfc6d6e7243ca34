"""`conveyor` commands as real processes, for tests that signal, kill or fuzz them."""

from __future__ import annotations

import subprocess
import sys
import tempfile

from services.core.settings import Settings
from tests.conftest import settings_env


def start_process(settings: Settings, command: str) -> subprocess.Popen[str]:
    """`conveyor <command>`; its log goes to a file (a pipe nobody reads would block it)."""
    log = tempfile.NamedTemporaryFile("w+", prefix=f"conveyor-{command}-", suffix=".log")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", command],
        env=settings_env(settings), stderr=log, text=True,
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def start_worker_process(settings: Settings) -> subprocess.Popen[str]:
    """A worker process, logging to a file."""
    return start_process(settings, "worker")


def worker_log(process: subprocess.Popen[str]) -> str:
    log = process.log  # type: ignore[attr-defined]
    log.seek(0)
    return str(log.read())
