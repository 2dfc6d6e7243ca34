"""`conveyor api --processes N`: N processes serve one port, /metrics answers for all of
them, a SIGTERM drains them all, and a child that dies takes the pod down to restart."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.core.settings import Settings
from tests.support.env import settings_env
from tests.support.processes import wait_until_ready
from tests.support.services import free_port


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@contextmanager
def _api(settings: Settings, processes: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    env = settings_env(settings.model_copy(update={"api_port": port}))
    command = [sys.executable, "-m", "services.cli", "api", "--processes", str(processes)]
    parent = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, parent)
        yield parent, url
    finally:
        if parent.poll() is None:  # a test that failed: its children go too, not orphaned
            children = _children(parent.pid)
            parent.kill()
            parent.wait(30)
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)


def _requests_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "conveyor_http_requests_total"
        and sample.labels["route"] == "/api/v1/tasks"
        and sample.labels["method"] == "POST"
    )


def test_two_processes_serve_one_port_and_answer_metrics_for_both(settings: Settings) -> None:
    with _api(settings, 2) as (parent, url):
        children = _children(parent.pid)
        assert len(children) == 2
        with httpx.Client(base_url=url) as api:
            ids = [
                api.post("/api/v1/tasks", json={"title": f"t{n}", "kind": "noop"}).json()["id"]
                for n in range(40)
            ]
            deadline = time.monotonic() + 30  # the relay, in one of them, sends them all
            while any(api.get(f"/api/v1/tasks/{i}").json()["status"] == "NEW" for i in ids):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        # Whichever process a scrape reaches, it counts the requests of both.
        assert {_requests_counted(url) for _ in range(6)} == {40}
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(60) == 0
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]


def test_a_child_that_dies_stops_the_others_and_the_parent_exits_1(settings: Settings) -> None:
    with _api(settings, 2) as (parent, _):
        first, second = _children(parent.pid)
        os.kill(first, signal.SIGKILL)
        assert parent.wait(60) == 1
        assert not Path(f"/proc/{second}").exists() or _zombie(second)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return False
