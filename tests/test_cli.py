"""The `conveyor` command as a person runs it: `dev` in one process, `submit`, `get`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.support.env import ADMIN_URL, AMQP_URL, drop_database
from tests.support.processes import wait_until_ready
from tests.support.services import free_port

CONVEYOR = [sys.executable, "-m", "services.cli"]


@pytest.fixture(scope="module")
def dev_server(amqp_prefix: str) -> Iterator[tuple[str, dict[str, str]]]:
    """`conveyor dev` against a database it creates and migrates itself."""
    name = f"conveyor_dev_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": make_url(ADMIN_URL)
        .set(database=name)
        .render_as_string(hide_password=False),
        "CONVEYOR_AMQP_URL": AMQP_URL,
        "CONVEYOR_AMQP_PREFIX": f"{amqp_prefix}-dev",
        "CONVEYOR_API_PORT": str(port),
        "CONVEYOR_API_URL": f"http://127.0.0.1:{port}",
    }
    process = subprocess.Popen([*CONVEYOR, "dev"], env=env, stderr=subprocess.PIPE, text=True)
    url = env["CONVEYOR_API_URL"]
    try:
        wait_until_ready(url, process)
        yield url, env
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=30)
        drop_database(name)
    assert process.returncode == 0, log
    assert "Traceback" not in log, log


def _conveyor(env: dict[str, str], *args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run([*CONVEYOR, *args], env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize(
    ("kind", "payload", "status", "result"),
    [
        ("demo", {"seconds": 0.1}, "COMPLETED", {"message": "worked for 0.1 s", "slept": 0.1}),
        ("noop", {}, "COMPLETED", {}),
        ("sleep", {"seconds": 0.1}, "COMPLETED", {"slept": 0.1}),
        ("echo", {"hello": "world"}, "COMPLETED", {"hello": "world"}),
        ("fail", {"message": "nope", "retryable": False}, "FAILED", None),
    ],
)
def test_dev_runs_every_builtin_kind(
    dev_server: tuple[str, dict[str, str]],
    kind: str,
    payload: dict[str, object],
    status: str,
    result: object,
) -> None:
    _, env = dev_server
    code, task = _conveyor(
        env,
        "submit",
        f"a {kind} task",
        "--kind",
        kind,
        "--payload",
        json.dumps(payload),
        "--wait",
        "20",
    )
    assert (task["status"], task["result"]) == (status, result)
    assert code == (0 if status == "COMPLETED" else 1)
    code, again = _conveyor(env, "get", str(task["id"]))
    assert code == 0 and again["status"] == status


def test_queues_are_listed_paused_and_resumed(dev_server: tuple[str, dict[str, str]]) -> None:
    _, env = dev_server  # keys are off on a laptop's loopback: every scope, platform included
    code, paused = _conveyor(env, "queues", "pause", "default")
    assert code == 0 and paused["paused"] is True
    code, listed = _conveyor(env, "queues")
    assert code == 0 and [q["paused"] for q in listed["items"]] == [True]  # type: ignore[union-attr, index]
    code, resumed = _conveyor(env, "queues", "resume", "default")
    assert code == 0 and resumed["paused"] is False
    code, unknown = _conveyor(env, "queues", "pause", "nope")
    assert code == 1 and unknown["status"] == 404
