"""`conveyor api --processes N`: N API processes on one listening socket, so a pod uses the
cores it is given, as gunicorn's and uvicorn's workers do.

The parent binds the port, then starts N children, each a fresh `conveyor api` that
serves the inherited socket (the kernel hands each new connection to one of them). The
parent only watches: SIGTERM or SIGINT goes to every child, each drains as a single
process would; a child that exits on its own stops the others and the parent exits 1, so
Kubernetes restarts the pod as it would a single process that died.

Once is enough for the background loops that serve the whole installation (the relay and
scheduler, the recovery sweep, retention): child 0 runs them, the others serve requests
and their own waiters. Metrics are kept in prometheus_client's multiprocess files, in a
folder of the parent's (PROMETHEUS_MULTIPROC_DIR), so /metrics answers the sum over the
children (counters, histograms) or the most recent value (the database-wide gauges),
whichever child a scrape reaches.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import FrameType

# How a child learns which socket to serve and which one it is.
LISTEN_FD = "CONVEYOR_API_LISTEN_FD"
PROCESS_INDEX = "CONVEYOR_API_PROCESS_INDEX"
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# How long the parent waits for its children once they were told to stop (their drain).
STOP_PATIENCE = 60.0


def serve_processes(listening: socket.socket, processes: int) -> int:
    """Run `processes` children on `listening` until a signal or a child's exit; the
    exit code of the pod's main process."""
    metrics = tempfile.mkdtemp(prefix="conveyor-metrics-")
    env = {**os.environ, LISTEN_FD: str(listening.fileno()), MULTIPROC_DIR: metrics}
    command = [sys.executable, "-m", "services.cli", "api"]
    children = [
        subprocess.Popen(
            command, env={**env, PROCESS_INDEX: str(index)}, pass_fds=[listening.fileno()]
        )
        for index in range(processes)
    ]
    listening.close()  # the children hold it now
    stopping: list[int] = []

    def stop(signum: int, _: FrameType | None) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        if not stopping:  # a child died: the others stop, the pod restarts
            stop(signal.SIGTERM, None)
        deadline = time.monotonic() + STOP_PATIENCE
        for child in children:
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    finally:
        shutil.rmtree(metrics, ignore_errors=True)
    # uvicorn ends by raising again the signal that stopped it: that is a clean end too.
    clean = bool(stopping) and all(c.returncode in (0, -stopping[0]) for c in children)
    return 0 if clean else 1


def inherited() -> tuple[socket.socket, int] | None:
    """The socket and index a parent gave this process, or None for a process on its own."""
    fd = os.environ.get(LISTEN_FD)
    if fd is None:
        return None
    return socket.socket(fileno=int(fd)), int(os.environ.get(PROCESS_INDEX, "0"))
