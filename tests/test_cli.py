"""The `conveyor` command as a person runs it: `dev` in one process, then the client commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.core.auth import parse_scopes
from services.core.db.keys import SqlKeyStore
from services.core.settings import Settings
from tests.support.env import AMQP_URL
from tests.support.processes import running_dev
from tests.support.services import free_port, running_api, running_worker, submit, wait_for

CONVEYOR = [sys.executable, "-m", "services.cli"]
# Each command group and its actions, as its help lists them.
GROUPS = {
    "tasks": ["submit", "get", "attempts", "logs", "wait", "list", "watch", "cancel", "retry"],
    "schedules": ["list", "get", "pause", "resume", "delete", "create"],
    "queues": ["list", "pause", "resume"],
    "workers": [],
    "kinds": ["list", "forget"],
    "keys": ["create", "generate", "list", "revoke"],
}


def conveyorctl() -> list[str]:
    """The `conveyorctl` script that installing conveyor-client puts beside this Python."""
    script = Path(sys.executable).with_name("conveyorctl")
    if not script.exists():
        pytest.fail(f"{script} is missing: pip install -e clients/python makes it")
    return [str(script)]


@pytest.fixture(scope="module")
def dev_server(amqp_prefix: str) -> Iterator[tuple[str, dict[str, str]]]:
    """`conveyor dev` against a database it creates and migrates itself."""
    with running_dev(amqp_prefix) as (url, env):
        yield url, env


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
    code, paused = _conveyor(env, "queues", "pause", "default", "-o", "json")
    assert code == 0 and paused["paused"] is True
    code, listed = _conveyor(env, "queues", "-o", "json")
    assert code == 0 and [q["paused"] for q in listed] == [True]  # type: ignore[union-attr, index]
    code, resumed = _conveyor(env, "queues", "resume", "default", "-o", "json")
    assert code == 0 and resumed["paused"] is False
    done = _run(env, "queues", "pause", "nope")
    assert done.returncode == 4 and done.stdout == ""
    assert done.stderr.startswith("conveyor: ") and "HTTP 404 queue-not-found" in done.stderr


def test_workers_are_listed_as_json_and_as_a_table(dev_server: tuple[str, dict[str, str]]) -> None:
    _, env = dev_server  # `conveyor dev` runs a worker beside the API
    code, listed = _conveyor(env, "workers", "--queue", "default", "-o", "json")
    assert code == 0 and len(listed) == 1, listed
    (worker,) = listed  # type: ignore[misc]
    assert (worker["state"], worker["queues"], worker["running"]) == ("alive", ["default"], 0)
    done = _run(env, "workers")
    header, row = done.stdout.splitlines()
    assert header.split() == [
        "ID",
        "STATE",
        "RUNNING",
        "CONCURRENCY",
        "QUEUES",
        "VERSION",
        "LAST_SEEN_AT",
    ]
    assert row.startswith(worker["id"]) and " alive " in row and '["default"]' in row
    done = _run(env, "workers", "--queue", "nope")
    assert done.returncode == 4 and "HTTP 422 validation" in done.stderr


def test_kinds_are_listed_as_a_table_and_with_their_schemas_as_json(
    dev_server: tuple[str, dict[str, str]],
) -> None:
    _, env = dev_server
    code, listed = _conveyor(env, "kinds", "-o", "json")
    assert code == 0
    by_name = {kind["name"]: kind for kind in listed}  # type: ignore[union-attr, index]
    assert {"demo", "echo", "fail", "noop", "sleep"} <= set(by_name)
    assert by_name["demo"]["builtin"] and by_name["demo"]["workers"] == 1
    header, *rows = _run(env, "kinds").stdout.splitlines()
    assert header.split() == ["NAME", "QUEUE", "WORKERS", "BUILTIN", "DESCRIPTION"]
    assert any(row.startswith("demo ") and "Simulated work" in row for row in rows)
    done = _run(env, "kinds", "forget", "demo")
    assert done.returncode == 4 and "HTTP 409 kind-in-use" in done.stderr
    assert _run(env, "kinds", "forget").returncode == 2


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CONVEYOR, *args], env=env, capture_output=True, text=True, timeout=60)


def test_attempts_are_shown_and_failed_tasks_run_again(
    dev_server: tuple[str, dict[str, str]],
) -> None:
    _, env = dev_server
    payload = json.dumps({"message": "nope", "retryable": False})
    code, task = _conveyor(
        env,
        "tasks",
        "submit",
        "fails",
        "--kind",
        "fail",
        "--payload",
        payload,
        "--wait",
        "20",
        "-o",
        "json",
    )
    assert code == 1 and task["status"] == "FAILED"  # exit 1: the task failed
    code, attempts = _conveyor(env, "tasks", "attempts", str(task["id"]), "-o", "json")
    assert code == 0
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "failed")]  # type: ignore[union-attr, index]
    code, again = _conveyor(env, "tasks", "retry", str(task["id"]), "-o", "json")
    assert code == 0 and again["status"] == "PENDING" and again["attempts"] == 1
    created = datetime.fromisoformat(str(task["created_at"]))
    since = (created - timedelta(milliseconds=1)).isoformat()
    code, twice = _conveyor(
        env, "tasks", "retry", "--status", "FAILED", "--created-after", since, "-o", "json"
    )
    assert code == 0 and twice["changed"] in (0, 1)  # 1 when it has failed again meanwhile
    done = _run(env, "tasks", "cancel")
    assert done.returncode == 2 and "--all" in done.stderr  # no filter: nothing is touched


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
        "-o",
        "json",
    )
    assert code == 0 and made["task"]["kind"] == "noop"  # type: ignore[index]
    assert all(run.endswith("+09:00") for run in made["next_runs"])  # type: ignore[union-attr]
    listed = _run(env, "schedules")  # a table by default
    assert listed.returncode == 0 and "cli-nightly" in listed.stdout and "NAME" in listed.stdout
    code, paused = _conveyor(env, "schedules", "pause", str(made["id"]), "-o", "json")
    assert code == 0 and paused["paused"] is True
    assert _run(env, "schedules", "delete", str(made["id"])).returncode == 0
    gone = _run(env, "schedules", "get", str(made["id"]))
    assert gone.returncode == 4 and "schedule-not-found" in gone.stderr
    bad = _run(env, "schedules", "create", "x", "not cron", "--kind", "noop")
    assert bad.returncode == 4 and "cron" in bad.stderr and "Traceback" not in bad.stderr


def test_tasks_are_listed_as_a_table_or_json_and_waited_for(
    dev_server: tuple[str, dict[str, str]],
) -> None:
    _, env = dev_server
    marker = uuid.uuid4().hex[:8]
    code, task = _conveyor(
        env, "tasks", "submit", f"table {marker}", "--kind", "noop", "-o", "json"
    )
    assert code == 0
    code, done = _conveyor(env, "tasks", "wait", str(task["id"]), "--timeout", "20", "-o", "json")
    assert code == 0 and done["status"] == "COMPLETED"
    shown = _run(env, "tasks", "list", "--title", marker)
    header, row = shown.stdout.splitlines()
    assert header.split() == [
        "ID",
        "STATUS",
        "PRIORITY",
        "KIND",
        "QUEUE",
        "ATTEMPTS",
        "CREATED_AT",
        "TITLE",
    ]
    assert (
        row.startswith(str(task["id"])) and "COMPLETED" in row and row.endswith(f"table {marker}")
    )
    code, listed = _conveyor(env, "tasks", "list", "--title", marker, "-o", "json")
    assert [t["id"] for t in listed] == [task["id"]]  # type: ignore[index]
    later = _conveyor(
        env,
        "tasks",
        "submit",
        "later",
        "--kind",
        "noop",
        "--at",
        "2030-01-01T00:00:00Z",
        "-o",
        "json",
    )[1]
    waited = _run(env, "tasks", "wait", str(later["id"]), "--timeout", "0.5")
    assert waited.returncode == 3  # the wait ended before the task did
    watch = subprocess.Popen(
        [*CONVEYOR, "tasks", "watch", "--title", marker, "--interval", "0.3"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        screen = watch.stdout.readline() + watch.stdout.readline() + watch.stdout.readline()  # type: ignore[union-attr]
        screen += watch.stdout.readline()  # type: ignore[union-attr]
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(10)
    assert "newest task(s)" in screen and "COMPLETED" in screen
    assert watch.returncode == 130


async def test_logs_prints_what_the_handler_logged_in_the_last_attempt_or_the_one_asked(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="talkative", max_attempts=2)
        assert (await wait_for(api, task["id"]))["status"] == "COMPLETED"
        later = await submit(api, kind="noop", scheduled_at="2030-01-01T00:00:00Z")
        env = {**os.environ, "CONVEYOR_API_URL": str(api.base_url).rstrip("/")}
        ran = [
            await asyncio.to_thread(_run, env, "tasks", "logs", task_id, *options)
            for task_id, options in [
                (task["id"], []),
                (task["id"], ["--attempt", "1"]),
                (task["id"], ["--attempt", "2", "-o", "json"]),
                (task["id"], ["--attempt", "3"]),
                (later["id"], []),
            ]
        ]
    last, first, as_json, missing, not_started = ran
    assert last.returncode == first.returncode == as_json.returncode == 0, last.stderr
    assert [line.split(maxsplit=2)[1:] for line in last.stdout.splitlines()] == [
        ["INFO", "attempt 2 starts"],
        ["WARNING", "payload has 0 keys"],
    ]
    assert first.stdout.splitlines()[0].endswith(" INFO    attempt 1 starts")
    logs = json.loads(as_json.stdout)
    assert (logs["attempt"], logs["dropped"], len(logs["lines"])) == (2, 0, 2)
    assert missing.returncode == 4 and "HTTP 404 attempt-not-found" in missing.stderr
    assert not_started.returncode == 4 and "has not started yet" in not_started.stderr


def test_every_failure_is_one_clear_line_and_its_exit_code(
    dev_server: tuple[str, dict[str, str]],
) -> None:
    _, env = dev_server
    version = _run(env, "--version")
    assert version.returncode == 0 and version.stdout.startswith("conveyor ")
    bad = _run(env, "tasks", "submit", "t", "--payload", "{not json")
    assert (
        bad.returncode == 2
        and "--payload: not JSON" in bad.stderr
        and "Traceback" not in bad.stderr
    )
    missing = _run(env, "tasks", "get", str(uuid.uuid4()))
    assert missing.returncode == 4 and missing.stderr.count("\n") == 1
    assert "HTTP 404 task-not-found" in missing.stderr
    invalid = _run(env, "tasks", "get", "not-an-id")
    assert invalid.returncode == 4 and "HTTP 422 validation" in invalid.stderr
    port = free_port()
    away = _run(
        {**env, "CONVEYOR_API_URL": f"http://127.0.0.1:{port}"}, "tasks", "list", "--retries", "1"
    )
    assert away.returncode == 6 and away.stderr.startswith("conveyor: cannot reach the API")
    assert away.stderr.count("\n") == 1 and "Traceback" not in away.stderr
    debug = _run(
        {**env, "CONVEYOR_API_URL": f"http://127.0.0.1:{port}"},
        "tasks",
        "list",
        "--retries",
        "1",
        "--debug",
    )
    assert debug.returncode == 6 and "Traceback" in debug.stderr  # --debug shows where


def test_a_server_failure_exits_five(amqp_prefix: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        # PostgreSQL is not there: the API answers 503 and says so.
        "CONVEYOR_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none",
        "CONVEYOR_AMQP_URL": AMQP_URL,
        "CONVEYOR_AMQP_PREFIX": f"{amqp_prefix}-down",
        "CONVEYOR_API_PORT": str(port),
        "CONVEYOR_API_URL": f"http://127.0.0.1:{port}",
    }
    server = subprocess.Popen([*CONVEYOR, "api"], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{env['CONVEYOR_API_URL']}/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        failed = _run(env, "tasks", "list", "--retries", "1")
    finally:
        server.terminate()
        server.wait(20)
    assert failed.returncode == 5 and "HTTP 503" in failed.stderr


def _ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*conveyorctl(), *args], env=env, capture_output=True, text=True, timeout=60
    )


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_conveyorctl_submits_lists_and_handles_schedules_by_name(
    dev_server: tuple[str, dict[str, str]],
) -> None:
    url, env = dev_server
    env = {k: v for k, v in env.items() if k != "CONVEYOR_API_URL"}  # --url says where
    marker = uuid.uuid4().hex[:8]
    task = _json(
        _ctl(
            env,
            *("tasks", "submit", f"ctl {marker}", "--kind", "noop", "--key", "cvk_unused"),
            *("--url", url, "--wait", "20", "-o", "json"),
        )
    )
    assert task["status"] == "COMPLETED"
    listed = _ctl(env, "tasks", "list", "--title", marker, "--url", url)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].startswith(str(task["id"]))

    name = f"ctl-{marker}"
    made = _json(
        _ctl(
            env,
            "schedules",
            "create",
            name,
            "0 4 * * *",
            "--kind",
            "noop",
            "--url",
            url,
            "-o",
            "json",
        )
    )
    shown = _json(_ctl(env, "schedules", "get", name, "--url", url, "-o", "json"))
    assert shown["id"] == made["id"] and shown["name"] == name
    paused = _json(_ctl(env, "schedules", "pause", name, "--url", url, "-o", "json"))
    assert paused["paused"] is True
    resumed = _json(_ctl(env, "schedules", "resume", name, "--url", url, "-o", "json"))
    assert resumed["paused"] is False
    assert _ctl(env, "schedules", "delete", name, "--url", url).returncode == 0
    gone = _ctl(env, "schedules", "get", name, "--url", url)
    assert (gone.returncode, gone.stdout) == (4, "")
    assert gone.stderr == f"conveyorctl: no schedule is named {name!r}\n"
    by_id = _ctl(env, "schedules", "pause", str(made["id"]), "--url", url)
    assert by_id.returncode == 4 and "HTTP 404 schedule-not-found" in by_id.stderr


async def test_conveyorctl_sends_the_key_given_with_key_rather_than_the_environment_s(
    settings: Settings, keys: SqlKeyStore
) -> None:
    key, _ = await keys.create("cli-team", parse_scopes("submit,read"))
    secured = settings.model_copy(update={"auth_enabled": True, "auth_cache_seconds": 0.0})
    async with running_api(secured) as api:
        env = {
            **os.environ,
            "CONVEYOR_API_URL": str(api.base_url).rstrip("/"),
            "CONVEYOR_API_KEY": "cvk_abcdefghijkl_" + "A" * 43,  # a key that is no one's
        }
        submit_args = ("tasks", "submit", "keyed", "--kind", "noop", "-o", "json")
        with_key = await asyncio.to_thread(_ctl, env, *submit_args, "--key", key)
        without = await asyncio.to_thread(_ctl, env, *submit_args)
    assert with_key.returncode == 0, with_key.stderr
    assert json.loads(with_key.stdout)["title"] == "keyed"
    assert without.returncode == 4 and "HTTP 401 unauthenticated" in without.stderr


@pytest.mark.parametrize("command", [CONVEYOR, None], ids=["conveyor", "conveyorctl"])
def test_submitting_or_scheduling_without_a_kind_is_a_usage_error(
    command: list[str] | None,
) -> None:
    argv = command or conveyorctl()
    for args in (
        ["tasks", "submit", "t"],
        ["submit", "t"],
        ["schedules", "create", "nightly", "0 3 * * *"],
    ):
        done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, args
        assert "the following arguments are required: --kind" in done.stderr


@pytest.mark.parametrize("group", list(GROUPS))
def test_the_help_of_every_group_lists_each_of_its_actions_with_a_line(group: str) -> None:
    done = _run(dict(os.environ), group, "--help")
    assert done.returncode == 0 and done.stdout.startswith(f"usage: conveyor {group}")
    for action in GROUPS[group]:
        assert _help_line(done.stdout, action), f"{group} --help: no line for {action}"
    if group != "keys":  # the client commands' groups say what their exit codes mean
        assert "6  the API could not be reached" in done.stdout


def _help_line(help_text: str, action: str) -> bool:
    """Whether a line of the help starts with `action` (a sub-command's line) or `action:`
    (a line of an ACTION argument's help), and says something after it."""
    for line in help_text.splitlines():
        words = line.split()
        words = words[1:] if words[:1] == ["ACTION"] else words
        if words[:1] in ([action], [f"{action}:"]) and len(words) > 1:
            return True
    return False


@pytest.mark.parametrize("command", [CONVEYOR, None], ids=["conveyor", "conveyorctl"])
def test_an_unreachable_api_is_one_line_and_exit_six_with_the_default_retries(
    command: list[str] | None,
) -> None:
    argv = command or conveyorctl()
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [*argv, "tasks", "list", "--url", url], capture_output=True, text=True, timeout=60
    )
    prog = "conveyor" if command else "conveyorctl"
    assert (done.returncode, done.stdout) == (6, "")
    assert done.stderr.startswith(f"{prog}: cannot reach the API at {url}: ")
    assert done.stderr.count("\n") == 1 and "Connection refused" in done.stderr


@pytest.mark.parametrize("command", ["api", "dev"])
def test_a_port_in_use_stops_the_api_in_one_line(command: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**os.environ, "CONVEYOR_API_HOST": "127.0.0.1", "CONVEYOR_API_PORT": str(port)}
        done = subprocess.run(
            [*CONVEYOR, command], env=env, capture_output=True, text=True, timeout=60
        )
        debug = subprocess.run(
            [*CONVEYOR, command, "--debug"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert done.stderr == (
        f"conveyor: port {port} is in use on 127.0.0.1 (CONVEYOR_API_PORT chooses another)\n"
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr  # --debug shows where


@pytest.mark.parametrize(
    "args", [["dev"], ["migrate", "--wait-for-database", "0"]], ids=["dev", "migrate"]
)
def test_postgresql_out_of_reach_is_one_line(args: list[str]) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/none",
        "CONVEYOR_API_PORT": str(free_port()),
    }
    done = subprocess.run([*CONVEYOR, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"conveyor: cannot reach PostgreSQL at 127.0.0.1:{port}/none: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
