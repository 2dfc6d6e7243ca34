"""How fast the command lines start, each command a new process as a shell runs it:
`conveyor --version`, `conveyor --help`, `conveyor tasks list` against an API that is not
there (one try), and `conveyorctl --version`. The median and the slowest of RUNS runs,
beside Python's own start on this machine. Needs no server."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.context import Bench

RUNS = 10
GOAL_SECONDS = 0.3


def run(bench: Bench) -> None:
    print("starting the command lines", file=sys.stderr)
    python = statistics.median(wall_seconds([sys.executable, "-c", "pass"]))
    for what, argv, code in commands():
        seconds = wall_seconds(argv, code)
        median = statistics.median(seconds)
        bench.row(
            f"start of {what}",
            f"median {median:.2f} s, max {max(seconds):.2f} s ({RUNS} runs)",
            f"Python alone starts in {python:.2f} s",
            goal=f"median < {GOAL_SECONDS} s",
            met=median < GOAL_SECONDS,
        )


def commands() -> list[tuple[str, list[str], int]]:
    """What is timed: its name, its command line, and the exit code it ends with."""
    conveyor, conveyorctl = script("conveyor"), script("conveyorctl")
    nowhere = f"http://127.0.0.1:{closed_port()}"
    return [
        ("conveyor --version", [conveyor, "--version"], 0),
        ("conveyor --help", [conveyor, "--help"], 0),
        (
            "conveyor tasks list, API unreachable, --retries 1",
            [conveyor, "tasks", "list", "--url", nowhere, "--retries", "1"],
            6,
        ),
        ("conveyorctl --version", [conveyorctl, "--version"], 0),
    ]


def script(name: str) -> str:
    """The console script `name` that installing the distributions put beside this Python."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise SystemExit(f"{path} is missing: pip install -e clients/python -e .")
    return str(path)


def closed_port() -> int:
    """A port of this machine nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wall_seconds(argv: list[str], code: int = 0) -> list[float]:
    """The wall time of RUNS runs of `argv`, each checked to end with exit `code`."""
    seconds = []
    for _ in range(RUNS):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, timeout=60)
        seconds.append(time.perf_counter() - started)
        if done.returncode != code:
            raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr.decode()}")
    return seconds
