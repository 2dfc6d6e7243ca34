"""Metrics move by exactly what a known workload did; dashboards and alerts use real names."""

from __future__ import annotations

import asyncio
import json
import platform
import re
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.core.settings import Settings
from services.core.telemetry.metrics import KIND_LABELS, VERSION, kind_label
from tests.support.processes import start_worker_process
from tests.support.services import (
    free_port,
    register_kinds,
    running_api,
    running_worker,
    submit,
    wait_for,
)
from tests.support.tools import tool

CHART_FILES = Path(__file__).parents[2] / "charts" / "conveyor" / "files"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(api: httpx.AsyncClient) -> Samples:
    text = (await api.get("/metrics")).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_counters_move_by_exactly_the_workload(settings: Settings) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    await register_kinds(settings)
    async with running_api(settings) as api:
        before = await _scrape(api)
        tasks = [await submit(api, kind="noop", priority="HIGH") for _ in range(3)]
        tasks.append(
            await submit(
                api, kind="fail", priority="LOW", payload={"message": "no", "retryable": False}
            )
        )
        tasks.append(
            await submit(
                api,
                kind="flaky",
                priority="MEDIUM",
                payload={"key": uuid.uuid4().hex, "failures": 1},
            )
        )
        # All queued before any worker runs, so each goes NEW -> PENDING -> IN_PROGRESS.
        for task in tasks:
            await wait_for(api, task["id"], {"PENDING"})
        async with running_worker(settings):
            for task in tasks:
                await wait_for(api, task["id"])
        cancelled = await submit(api, kind="noop", scheduled_at="2999-01-01T00:00:00Z")
        await api.delete(f"/api/v1/tasks/{cancelled['id']}")
        after = await _scrape(api)

    def moved(name: str, **labels: str) -> float:
        return _moved(before, after, name, **labels)

    assert moved("conveyor_tasks_submitted_total", priority="HIGH", kind="noop") == 3
    assert moved("conveyor_tasks_submitted_total", priority="LOW", kind="fail") == 1
    assert moved("conveyor_tasks_submitted_total", priority="MEDIUM", kind="flaky") == 1
    changes = "conveyor_task_status_changes_total"
    assert moved(changes, status="NEW") == 5
    assert moved(changes, status="PENDING") == 5 + 1 + 1  # relayed, one retry, one scheduled
    assert moved(changes, status="IN_PROGRESS") == 6
    assert moved(changes, status="COMPLETED") == 4
    assert moved(changes, status="FAILED") == 1
    assert moved(changes, status="CANCELLED") == 1
    assert moved("conveyor_task_retries_total", kind="flaky") == 1
    outcomes = "conveyor_task_outcomes_total"
    assert moved(outcomes, kind="noop", status="COMPLETED") == 3
    assert moved(outcomes, kind="fail", status="FAILED") == 1
    assert moved(outcomes, kind="flaky", status="PENDING") == 1
    assert moved(outcomes, kind="flaky", status="COMPLETED") == 1
    durations = "conveyor_task_attempt_duration_seconds_count"
    assert moved(durations, kind="noop", queue="default") == 3
    assert moved("conveyor_task_queue_wait_seconds_count", priority="HIGH", queue="default") == 3
    assert (
        moved("conveyor_http_requests_total", route="/api/v1/tasks", method="POST", status="201")
        == 6
    )
    assert (
        moved(
            "conveyor_http_requests_total",
            route="/api/v1/tasks/{task_id}",
            method="DELETE",
            status="200",
        )
        == 1
    )


async def test_queue_gauges_count_ready_and_running_tasks(settings: Settings) -> None:
    async with running_api(settings) as api:
        for priority in ("HIGH", "HIGH", "LOW"):
            await submit(api, kind="noop", priority=priority)
        samples = await _scrape(api)
    depth = "conveyor_queue_depth_tasks"
    assert samples[(depth, frozenset({"priority": "HIGH", "state": "ready"}.items()))] == 2
    assert samples[(depth, frozenset({"priority": "LOW", "state": "ready"}.items()))] == 1
    assert samples[(depth, frozenset({"priority": "HIGH", "state": "running"}.items()))] == 0
    # How long tasks wait: one family, by queue and priority.
    oldest = "conveyor_queue_oldest_ready_seconds"
    assert (oldest, frozenset({"queue": "default", "priority": "HIGH"}.items())) in samples
    assert samples[(oldest, frozenset({"queue": "default", "priority": "MEDIUM"}.items()))] == 0
    assert not [name for name, _ in samples if name == "conveyor_queue_oldest_age_seconds"]


async def test_the_gauges_say_when_postgresql_cannot_be_read(settings: Settings) -> None:
    up = ("conveyor_database_gauges_up", frozenset())
    refreshed = ("conveyor_gauges_refreshed_timestamp_seconds", frozenset())
    async with running_api(settings) as api:
        fresh = await _scrape(api)
    assert fresh[up] == 1 and fresh[refreshed] > 0
    # Nothing listens on port 1: the gauges keep old values, and say so.
    away = settings.model_copy(update={"database_url": "postgresql+asyncpg://u@127.0.0.1:1/x"})
    async with running_api(away, ready=False) as api:
        samples = await _scrape(api)
    assert samples[up] == 0
    assert samples[refreshed] == fresh[refreshed]  # when they were last read, not now
    assert samples[
        (
            "conveyor_build_info",
            frozenset({"version": VERSION, "python": platform.python_version()}.items()),
        )
    ]


@pytest.mark.unit
def test_kind_labels_stay_bounded_whatever_kinds_clients_make_up() -> None:
    labels = {kind_label(uuid.uuid4().hex) for _ in range(KIND_LABELS * 3)}
    assert len(labels) <= KIND_LABELS + 1 and "other" in labels


def _used_names() -> set[str]:
    dashboard = json.loads((CHART_FILES / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((CHART_FILES / "alerts.yaml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for expr in exprs
        for name in re.findall(r"\bconveyor_[a-z_]+", expr)
    }


async def test_every_metric_the_dashboard_and_alerts_use_is_exported(settings: Settings) -> None:
    port = free_port()
    worker = start_worker_process(settings.model_copy(update={"worker_metrics_port": port}))
    try:
        async with running_api(settings) as api:
            exported = (await api.get("/metrics")).text
            for _ in range(100):
                try:
                    exported += (await api.get(f"http://127.0.0.1:{port}/metrics")).text
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    names = {line.split()[2] for line in exported.splitlines() if line.startswith("# TYPE")}
    used = _used_names()
    assert used, "the dashboard and the rules use no metric?"
    assert used <= names, used - names


@pytest.mark.unit
def test_promtool_accepts_the_alert_rules() -> None:
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(CHART_FILES / "alerts.yaml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.unit
def test_promtool_accepts_every_dashboard_expression(tmp_path: Path) -> None:
    dashboard = json.loads((CHART_FILES / "dashboard.json").read_text())
    rules = [
        {
            "record": f"dashboard:panel_{panel['id']}_{target['refId']}",
            "expr": target["expr"].replace("$__rate_interval", "5m"),
        }
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rules)} rules found" in done.stdout
