"""The alerts and the dashboard as the chart renders them: routable, per release, with a
runbook each, thresholds from values, and accepted by promtool."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import CHART, one, render
from tests.support.tools import tool

# Offline: helm renders the chart, promtool checks and runs the rules.
pytestmark = pytest.mark.unit
RUNBOOKS = CHART.parents[1] / "docs" / "runbooks.md"
MONITORING = {
    "metrics.prometheusRule.enabled": "true",
    "metrics.grafanaDashboard.enabled": "true",
}


def _rules(**sets: str) -> list[dict[str, Any]]:
    rule = one(render(**MONITORING, **sets), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _promtool_accepts(rules: list[dict[str, Any]], path: Path) -> None:
    path.write_text(yaml.safe_dump({"groups": [{"name": "conveyor", "rules": rules}]}))
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_keeps_namespace_and_job_and_names_this_release(tmp_path: Path) -> None:
    rules = _rules()
    assert len(rules) >= 10
    for rule in rules:
        expr = " ".join(rule["expr"].split())
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            assert "namespace" in grouping, (rule["alert"], grouping)
        for job in re.findall(r'job="([^"]+)"', expr):
            assert job.startswith("conveyor-"), (rule["alert"], job)
            assert 'namespace="tasks"' in expr, rule["alert"]
        assert "max(" not in expr.replace(" ", ""), rule["alert"]  # no label-dropping max()
    names = {r["alert"] for r in rules}
    assert {"ConveyorApiErrors", "ConveyorApiDown", "ConveyorDatabaseUnreadable"} <= names
    _promtool_accepts(rules, tmp_path / "rules.yaml")


def test_every_alert_has_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9-]", "", heading.lower().replace(" ", "-"))
        for heading in re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.M)
    }
    for rule in _rules(**{"metrics.prometheusRule.runbookBaseUrl": "https://wiki.example/rb"}):
        url = rule["annotations"]["runbook_url"]
        base, anchor = url.split("#")
        assert base == "https://wiki.example/rb" and anchor in anchors, url


def test_thresholds_durations_severities_and_switches_come_from_values(tmp_path: Path) -> None:
    sets = {
        "metrics.prometheusRule.alerts.ConveyorApiErrors.threshold": "0.02",
        "metrics.prometheusRule.alerts.ConveyorApiErrors.for": "15m",
        "metrics.prometheusRule.alerts.ConveyorApiErrors.severity": "critical",
        "metrics.prometheusRule.alerts.ConveyorWorkersDown.enabled": "false",
        "metrics.prometheusRule.extraAlertLabels.team": "platform",
    }
    rules = {r["alert"]: r for r in _rules(**sets)}
    errors = rules["ConveyorApiErrors"]
    assert errors["expr"].rstrip().endswith("> 0.02")
    assert (errors["for"], errors["labels"]["severity"]) == ("15m", "critical")
    assert "ConveyorWorkersDown" not in rules
    assert all(r["labels"]["team"] == "platform" for r in rules.values())
    _promtool_accepts(list(rules.values()), tmp_path / "rules.yaml")


@pytest.mark.parametrize("release", ["one", "two"])
def test_the_dashboard_is_one_per_release_with_namespace_and_job(release: str) -> None:
    config = one(render(**MONITORING, fullnameOverride=release), "ConfigMap", "-dashboard")
    dashboard = json.loads(config["data"]["conveyor.json"])
    assert dashboard["title"] == f"Conveyor (tasks/{release})"
    assert len(dashboard["uid"]) <= 40
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "job"} <= variables
    for panel in dashboard["panels"]:
        assert panel.get("description"), panel["title"]
        for target in panel["targets"]:
            for selector in re.findall(r"conveyor_[a-z_]+(\{[^}]*\})?", target["expr"]):
                assert 'namespace="$namespace"' in selector, target["expr"]
                assert 'job=~"$job"' in selector, target["expr"]


def test_two_releases_get_two_dashboard_uids() -> None:
    uids = {
        json.loads(
            one(render(**MONITORING, fullnameOverride=name), "ConfigMap", "-dashboard")["data"][
                "conveyor.json"
            ]
        )["uid"]
        for name in ("one", "two")
    }
    assert len(uids) == 2


# promtool unit tests of the rendered rules: what fires, and what stays quiet.
_API = 'namespace="tasks",job="conveyor-api",instance="10.0.0.7:8000"'


def _promtool_fires(
    tmp_path: Path, series: dict[str, str], at: str, expected: dict[str, list[dict[str, str]]]
) -> None:
    """Feed `series` (one sample a minute) to the chart's rules; at `at`, each alert named
    in `expected` fires with exactly those labels (an empty list: it stays quiet)."""
    rules = [{k: v for k, v in r.items() if k != "annotations"} for r in _rules()]
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "conveyor", "rules": rules}]})
    )
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": name,
                        "exp_alerts": [{"exp_labels": labels} for labels in fired],
                    }
                    for name, fired in expected.items()
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [tool("promtool"), "test", "rules", "test.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_loop_that_keeps_failing_is_alerted_on(tmp_path: Path) -> None:
    # Backed off to 10 s a pass: six errors a minute, and the loop named as failing.
    _promtool_fires(
        tmp_path,
        {
            f'conveyor_background_errors_total{{{_API},loop="relay"}}': "0+6x30",
            f'conveyor_background_errors_total{{{_API},loop="recovery"}}': "0x30",
            f'conveyor_loop_failing{{{_API},loop="relay"}}': "1x30",
        },
        "20m",
        {
            "ConveyorBackgroundLoopFailing": [
                {
                    "namespace": "tasks",
                    "job": "conveyor-api",
                    "loop": "relay",
                    "severity": "warning",
                }
            ]
        },
    )


# Every alert on a database-wide gauge, with what makes it fire while the gauges are fresh.
_GAUGE_SERIES = {
    f"conveyor_tasks_lease_expired{{{_API}}}": "1x100",
    f"conveyor_outbox_backlog_tasks{{{_API}}}": "5x100",
    f"conveyor_outbox_oldest_age_seconds{{{_API}}}": "1000x100",
    f'conveyor_queue_depth_tasks{{{_API},priority="NORMAL",state="ready"}}': "3x100",
    f'conveyor_queue_oldest_ready_seconds{{{_API},queue="default",priority="HIGH"}}': "1000x100",
    f'conveyor_queue_paused{{{_API},queue="default"}}': "0x100",
    f'conveyor_queue_oldest_ready_seconds{{{_API},queue="held",priority="HIGH"}}': "1000x100",
    f'conveyor_queue_paused{{{_API},queue="held"}}': "1x100",
}
_RELEASE = {"namespace": "tasks", "job": "conveyor-api"}
_GAUGE_ALERTS = {
    "ConveyorTasksStuckInProgress": [{**_RELEASE, "severity": "warning"}],
    "ConveyorOldestWaitingTaskTooOld": [  # not of the paused queue
        {**_RELEASE, "queue": "default", "priority": "HIGH", "severity": "warning"}
    ],
    "ConveyorOutboxBacklogGrowing": [{**_RELEASE, "severity": "critical"}],
    "ConveyorBacklogWithoutWorkers": [{**_RELEASE, "queue": "default", "severity": "critical"}],
    "ConveyorQueueWaitTooLong": [{**_RELEASE, "queue": "default", "severity": "warning"}],
    "ConveyorQueuePausedLong": [{**_RELEASE, "queue": "held", "severity": "info"}],
}
_REFRESHED = f"conveyor_gauges_refreshed_timestamp_seconds{{{_API}}}"


def test_gauge_alerts_fire_while_the_gauges_are_fresh(tmp_path: Path) -> None:
    # Refreshed at every scrape: the timestamp is the scrape's time.
    _promtool_fires(
        tmp_path,
        {**_GAUGE_SERIES, _REFRESHED: "0+60x100"},
        "90m",
        {**_GAUGE_ALERTS, "ConveyorGaugesStale": []},
    )


def test_stale_gauges_quiet_the_alerts_on_them_and_are_alerted_on(tmp_path: Path) -> None:
    # PostgreSQL went away at minute 5: the gauges keep their values, the timestamp stops.
    _promtool_fires(
        tmp_path,
        {**_GAUGE_SERIES, _REFRESHED: "0+60x5 300x95"},
        "90m",
        {
            **{name: [] for name in _GAUGE_ALERTS},
            "ConveyorGaugesStale": [{**_RELEASE, "severity": "warning"}],
        },
    )


def test_gauges_never_read_are_unknown_and_alerted_on(tmp_path: Path) -> None:
    # An API pod that has not read PostgreSQL since it started exports 0.
    _promtool_fires(
        tmp_path,
        {**_GAUGE_SERIES, _REFRESHED: "0x100"},
        "20m",
        {
            "ConveyorTasksStuckInProgress": [],
            "ConveyorGaugesStale": [{**_RELEASE, "severity": "warning"}],
        },
    )


def test_one_fresh_api_pod_keeps_the_gauges_fresh(tmp_path: Path) -> None:
    # Two pods: one lost PostgreSQL, the other reads it; the fresh one's values count.
    other = 'namespace="tasks",job="conveyor-api",instance="10.0.0.8:8000"'
    _promtool_fires(
        tmp_path,
        {
            f"conveyor_tasks_lease_expired{{{_API}}}": "0x30",
            _REFRESHED: "0+60x5 300x25",
            f"conveyor_tasks_lease_expired{{{other}}}": "1x30",
            f"conveyor_gauges_refreshed_timestamp_seconds{{{other}}}": "0+60x30",
        },
        "20m",
        {
            "ConveyorTasksStuckInProgress": [{**_RELEASE, "severity": "warning"}],
            "ConveyorGaugesStale": [],
        },
    )


# A queue with due tasks and no alive worker on it, queue by queue.
_FRESH = {_REFRESHED: "0+60x30"}


def _queue(name: str, waited: str, alive: str, draining: str = "0x30") -> dict[str, str]:
    """The API's gauges of one queue: its oldest due task's wait and its workers."""
    labels = f'{_API},queue="{name}"'
    return {
        f'conveyor_queue_oldest_ready_seconds{{{labels},priority="MEDIUM"}}': waited,
        f"conveyor_queue_paused{{{labels}}}": "0x30",
        f'conveyor_workers{{{labels},state="alive"}}': alive,
        f'conveyor_workers{{{labels},state="draining"}}': draining,
    }


def test_a_queue_with_a_backlog_and_no_alive_worker_is_alerted_on_by_itself(
    tmp_path: Path,
) -> None:
    # "reports" lost its only worker (it drains, then is gone); "default" keeps one.
    _promtool_fires(
        tmp_path,
        {
            **_FRESH,
            **_queue("reports", "0+60x30", "0x30", "1x3 0x27"),
            **_queue("default", "0+60x30", "2x30"),
        },
        "20m",
        {
            "ConveyorBacklogWithoutWorkers": [
                {**_RELEASE, "queue": "reports", "severity": "critical"}
            ]
        },
    )


def test_no_alert_before_its_for_time_nor_while_a_worker_is_alive(tmp_path: Path) -> None:
    _promtool_fires(
        tmp_path,
        {**_FRESH, **_queue("reports", "0+60x30", "0x30")},
        "8m",
        {"ConveyorBacklogWithoutWorkers": []},
    )
    _promtool_fires(
        tmp_path,
        {**_FRESH, **_queue("reports", "0+60x30", "1x30")},
        "20m",
        {"ConveyorBacklogWithoutWorkers": []},
    )


def test_a_queue_without_workers_and_without_backlog_is_quiet(tmp_path: Path) -> None:
    # A pool scaled to zero with nothing to do, and a paused queue whose tasks wait on purpose.
    paused = _queue("held", "0+60x30", "0x30")
    paused[f'conveyor_queue_paused{{{_API},queue="held"}}'] = "1x30"
    _promtool_fires(
        tmp_path,
        {**_FRESH, **_queue("idle", "0x30", "0x30"), **paused},
        "20m",
        {"ConveyorBacklogWithoutWorkers": []},
    )
