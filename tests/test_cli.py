"""The `conveyor` command as a person runs it: `dev` in one process, then the client commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

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


def test_attempts_are_shown_and_failed_tasks_run_again(
    dev_server: tuple[str, dict[str, str]],
) -> None:
    _, env = dev_server
    payload = json.dumps({"message": "nope", "retryable": False})
    _, task = _conveyor(
        env, "submit", "fails", "--kind", "fail", "--payload", payload, "--wait", "20"
    )
    code, attempts = _conveyor(env, "attempts", str(task["id"]))
    assert code == 0
    assert [(a["attempt"], a["outcome"]) for a in attempts["items"]] == [(1, "failed")]  # type: ignore[union-attr]
    code, again = _conveyor(env, "retry", str(task["id"]))
    assert code == 0 and again["status"] == "PENDING" and again["attempts"] == 1
    created = datetime.fromisoformat(str(task["created_at"]))
    since = (created - timedelta(milliseconds=1)).isoformat()
    code, twice = _conveyor(env, "retry", "--status", "FAILED", "--created-after", since)
    assert code == 0 and twice["changed"] in (0, 1)  # 1 when it has failed again meanwhile
    done = subprocess.run(
        [*CONVEYOR, "cancel"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "--all" in done.stderr  # no filter: nothing is touched


def test_schedules_are_created_listed_paused_and_deleted(
    dev_server: tuple[str, dict[str, str]],
) -> None:
    _, env = dev_server
    code, made = _conveyor(
        env,
        "schedules",
        "create",
        "cli-nightly",
        "0 3 * * *",
        "--timezone",
        "Asia/Tokyo",
        "--kind",
        "noop",
    )
    assert code == 0 and made["task"]["kind"] == "noop"  # type: ignore[index]
    assert str(made["next_run_at"]).endswith("Z") or "+00:00" in str(made["next_run_at"])
    assert all(run.endswith("+09:00") for run in made["next_runs"])  # type: ignore[union-attr]
    code, listed = _conveyor(env, "schedules")
    assert code == 0 and "cli-nightly" in [s["name"] for s in listed["items"]]  # type: ignore[union-attr]
    code, paused = _conveyor(env, "schedules", "pause", str(made["id"]))
    assert code == 0 and paused["paused"] is True
    done = subprocess.run(
        [*CONVEYOR, "schedules", "delete", str(made["id"])],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0
    code, gone = _conveyor(env, "schedules", "get", str(made["id"]))
    assert code == 1 and gone["status"] == 404
    code, bad = _conveyor(env, "schedules", "create", "x", "not cron")
    assert code == 1 and bad["errors"][0]["loc"] == ["body", "cron"]  # type: ignore[index]
