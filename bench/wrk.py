"""HTTP load with wrk: requests per second and latency percentiles of one path."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench.context import Bench

SECONDS = 10


def wrk(
    bench: Bench,
    path: str,
    connections: int,
    seconds: int = SECONDS,
    post: str = "",
    base: str = "",
) -> tuple[float, str, str]:
    """Requests per second, p50 and p99 of `base` (this run's API, by default) + `path`;
    `post` names a script in bench/."""
    args = [
        "wrk",
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"Authorization: {bench.auth['Authorization']}",
    ]
    if post:
        args += ["-s", str(Path(__file__).with_name(post))]
    done = subprocess.run(
        [*args, f"{base or bench.api}{path}"], capture_output=True, text=True, check=True
    )
    out = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    distribution = out.split("Latency Distribution", 1)[1]
    p50 = re.search(r"50%\s+(\S+)", distribution).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", distribution).group(1)  # type: ignore[union-attr]
    if "Non-2xx" in out:
        raise SystemExit(f"errors under load:\n{out}")
    return rate, p50, p99


def ms(latency: str) -> float:
    """wrk's latency ("812.00us", "3.27ms", "1.02s") in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", latency).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
