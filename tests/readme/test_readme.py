"""Every shell and Python block of the README runs, in order, as written (the placeholders
of tests/readme/examples.py filled in), against a fresh `conveyor dev`: an example that
no longer works fails here. A curl in a shell block may be refused (4xx) only where the
block says so (names the status); no answer may be a 5xx. A block that cannot run on a
test machine says why, and those are few."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.readme.examples import Block, blocks, runnable
from tests.support.processes import running_dev

CONVEYOR = [sys.executable, "-m", "services.cli"]
# The queues the README's examples name: those its Queues section defines.
QUEUES = [{"name": "default"}, {"name": "gpu", "max_running": 4}, {"name": "partner", "rate": 5}]
# Records each call's HTTP status, then answers as curl does.
CURL_SHIM = """#!/usr/bin/env bash
body=$(mktemp)
status=$("$REAL_CURL" -sS -o "$body" -w '%{http_code}' "$@") || { rc=$?; cat "$body"; exit $rc; }
cat "$body"; echo
printf '%s %s\\n' "$status" "$(printf '%s ' "$@" | tr '\\n' ' ')" >> "$CURL_LOG"
"""


@dataclass
class Readme:
    """The server the examples talk to, and what the blocks share."""

    url: str
    env: dict[str, str]
    curl_log: Path
    namespace: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def readme(amqp_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Readme]:
    """`conveyor dev` on a database of its own, with the README's queues, and a key, a
    task and a cursor for the placeholders."""
    shims = tmp_path_factory.mktemp("shims")
    (shims / "curl").write_text(CURL_SHIM)
    (shims / "curl").chmod(0o755)
    path = os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ["PATH"]])
    with running_dev(amqp_prefix, CONVEYOR_QUEUES=json.dumps(QUEUES)) as (url, env):
        env = {
            **env,
            "PATH": path,
            "REAL_CURL": shutil.which("curl") or "curl",
            "CURL_LOG": str(shims / "calls.log"),
            "API": url,
        }
        env.update(_placeholders(url, env))
        yield Readme(url, env, shims / "calls.log")


def _placeholders(url: str, env: dict[str, str]) -> dict[str, str]:
    scopes = "submit,read,cancel,admin,platform"
    made = subprocess.run(
        [*CONVEYOR, "keys", "create", "--tenant", "team-a", "--name", "readme", "--scopes", scopes],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.split()[0]
    failing = {"kind": "fail", "max_attempts": 1, "payload": {"retryable": False}}
    with httpx.Client(base_url=url, timeout=30) as api:
        ids = [
            api.post("/api/v1/tasks", json={"title": f"placeholder {n}", **failing}).json()["id"]
            for n in range(2)
        ]
        failed = api.get(f"/api/v1/tasks/{ids[0]}", params={"wait": 20}).json()
        assert failed["status"] == "FAILED", failed
        cursor = api.get("/api/v1/tasks", params={"limit": 1}).json()["next_cursor"]
    return {"KEY": key, "KEY_ID": key.split("_")[1], "ID": ids[0], "NEXT": cursor}


def _schedule_id(url: str, text: str) -> dict[str, str]:
    if "$SCHEDULE_ID" not in text:
        return {}
    (made,) = httpx.get(f"{url}/api/v1/schedules").json()["items"]
    return {"SCHEDULE_ID": made["id"]}


def _filled(block: Block, readme: Readme) -> str:
    host = readme.url.removeprefix("http://")
    text = block.text.replace("localhost:8000", host).replace("127.0.0.1:8000", host)
    return text.replace("CONVEYOR_API_KEY=cvk_...", "CONVEYOR_API_KEY=$KEY")


async def fetch_rows(url: str) -> list[dict[str, int]]:
    """A user's own function the README's handler calls: three rows."""
    return [{"n": n} for n in range(3)]


async def upsert(row: dict[str, int], idempotency_key: str) -> None:
    """A user's own function the README's handler calls: stores nothing."""


@pytest.mark.parametrize("block", runnable(), ids=lambda block: block.name)
def test_the_readme_example_runs_as_written(block: Block, readme: Readme) -> None:
    text = _filled(block, readme)
    if block.language == "python":
        _run_python(text, block, readme.namespace)
        return
    readme.curl_log.write_text("")
    env = {**readme.env, **_schedule_id(readme.url, text)}
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + text],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stderr}"
    for line in readme.curl_log.read_text().splitlines():
        status = line.split()[0]
        assert status < "400" or (status < "500" and status in block.text), (
            f"{block.name}: `curl {line[4:]}` answered {status}:\n{done.stdout}"
        )


def _run_python(text: str, block: Block, namespace: dict[str, Any]) -> None:
    namespace.setdefault("fetch_rows", fetch_rows)
    namespace.setdefault("upsert", upsert)
    code = compile(textwrap.dedent(text), block.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    awaited = eval(code, namespace)  # the README's own example
    if asyncio.iscoroutine(awaited):
        asyncio.run(awaited)


def test_few_blocks_are_not_run_and_each_says_why() -> None:
    shown = [b for b in blocks() if b.language in ("sh", "bash", "python")]
    skipped = [b for b in shown if b.not_run]
    assert len(skipped) <= len(shown) // 2, [b.name for b in skipped]
    assert all(len(b.not_run or "") > 20 for b in skipped)
