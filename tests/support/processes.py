"""`conveyor worker` as a real process, for tests that signal or kill it."""

from __future__ import annotations

import subprocess
import sys

from services.core.settings import Settings
from tests.conftest import settings_env


def start_worker_process(settings: Settings) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker"],
        env=settings_env(settings), stderr=subprocess.PIPE, text=True,
    )
