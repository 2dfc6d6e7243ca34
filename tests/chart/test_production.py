"""What a production install needs of the chart: a subchart's globals, tracing, the values
platform teams add, clusters without KEDA or prometheus-operator, and safe defaults."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart import reference
from tests.chart.render import (
    CHART,
    ROOT,
    VALUES_FILES,
    Manifest,
    by_kind,
    helm,
    one,
    pod_specs,
    refusal,
    render,
)

CI = CHART / "ci"
OPERATOR_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}


def _containers(manifests: list[Manifest], *, sidecars: bool = False) -> dict[str, Any]:
    """The containers of Conveyor's processes (not the helm test's client), by owner."""
    return {
        f"{owner}/{c['name']}": c
        for owner, spec in pod_specs(manifests)
        for c in spec["containers"]
        if not owner.startswith("Pod/")
        and (sidecars or c["image"].split("/")[-1].startswith("conveyor-"))
    }


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("values", [None, *VALUES_FILES], ids=lambda v: v.name if v else "default")
def test_helm_lint_strict_passes_for_every_values_file(values: Path | None) -> None:
    args = [helm(), "lint", "--strict", str(CHART), *(["--values", str(values)] if values else [])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_chart_works_as_a_subchart_with_the_parents_globals(tmp_path: Path) -> None:
    umbrella = tmp_path / "platform"
    shutil.copytree(CHART, umbrella / "charts" / "conveyor")
    (umbrella / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [{"name": "conveyor", "version": "*"}],
            }
        )
    )
    (umbrella / "values.yaml").write_text(
        yaml.safe_dump(
            {
                "global": {"imageRegistry": "mirror.example.com", "imagePullSecrets": ["pull"]},
                "conveyor": {"worker": {"replicas": 4}},
            }
        )
    )
    done = subprocess.run(
        [helm(), "template", "platform", str(umbrella), "--namespace", "tasks"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    manifests = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert one(manifests, "Deployment", "-worker")["spec"]["replicas"] == 4
    for owner, spec in pod_specs(manifests):
        assert spec["imagePullSecrets"] == [{"name": "pull"}], owner
        for container in spec["containers"]:
            assert container["image"].startswith("mirror.example.com/conveyor-dev/"), owner


def test_a_mirror_registry_and_a_digest_name_the_images() -> None:
    manifests = render(CI / "global-values.yaml")
    images = {c["image"] for c in _containers(manifests).values()}
    worker = "registry.internal.example.com/conveyor-dev/conveyor-worker@sha256:0123"
    assert any(image.startswith(worker) for image in images), images
    assert all(image.startswith("registry.internal.example.com/") for image in images)
    for owner, spec in pod_specs(manifests):
        assert {"name": "internal-registry"} in spec["imagePullSecrets"], owner
    for manifest in manifests:
        labels = manifest["metadata"].get("labels", {})
        assert labels.get("team") == "platform", manifest["metadata"]["name"]
        assert labels.get("app.kubernetes.io/name") == "tasks", manifest["metadata"]["name"]


def test_tracing_reaches_every_process_with_its_pod_and_namespace() -> None:
    containers = _containers(render(CI / "tracing-values.yaml"))
    traced = {name: _env(c) for name, c in containers.items() if "migrate" not in name}
    assert {name.rsplit("/", 1)[1] for name in traced} >= {"api", "worker", "operator"}
    for name, env in traced.items():
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
        assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.1", name
        attributes = dict(a.split("=", 1) for a in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
        assert attributes["k8s.pod.name"] == "$(K8S_POD_NAME)", name
        assert attributes["k8s.namespace.name"] == "$(K8S_NAMESPACE_NAME)", name
        assert attributes["deployment.environment.name"] == "production", name
        assert env["K8S_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}, name
        assert env["OTEL_EXPORTER_OTLP_HEADERS"]["secretKeyRef"]["name"] == "otel-auth"
    # Off by default, with no OTEL_ variable at all.
    for name, container in _containers(render()).items():
        assert not [k for k in _env(container) if k.startswith("OTEL_")], name


def test_tracing_needs_an_endpoint() -> None:
    assert "endpoint" in refusal(**{"tracing.enabled": "true"})


def test_extra_env_volumes_sidecars_and_scheduling_reach_the_pods() -> None:
    manifests = render(CI / "extras-values.yaml")
    specs = dict(pod_specs(manifests))
    worker, api = specs["Deployment/conveyor-worker"], specs["Deployment/conveyor-api"]
    for name, container in _containers(manifests).items():
        env = _env(container)
        assert env.get("HTTPS_PROXY") == "http://proxy.internal:3128", name
        assert {"configMapRef": {"name": "proxy-settings"}} in container["envFrom"], name
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["internal-ca"] == "/etc/ssl/internal", name
    worker_mounts = {m["name"] for m in worker["containers"][0]["volumeMounts"]}
    api_mounts = {m["name"] for m in api["containers"][0]["volumeMounts"]}
    assert "vault-secrets" in worker_mounts and "vault-secrets" not in api_mounts
    assert [c["name"] for c in worker["containers"]] == ["worker", "log-shipper"]
    assert (
        worker["priorityClassName"] == "batch-low" and api["priorityClassName"] == "platform-normal"
    )
    assert worker["nodeSelector"] == {"node.kubernetes.io/pool": "workers"}
    assert "nodeSelector" not in api and "podAntiAffinity" in api["affinity"]
    assert api["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    deployment = one(manifests, "Deployment", "-worker")
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"]["cost-center"] == "platform"
    assert template["annotations"]["prometheus.io/scrape"] == "false"
    assert "checksum/config" in template["annotations"]  # the chart's own stay
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["labels"].items()
    account = one(manifests, "ServiceAccount", "conveyor")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("/conveyor")


def test_secret_key_names_are_the_users() -> None:
    manifests = render(CI / "extras-values.yaml")
    for name, container in _containers(manifests).items():
        env = _env(container)
        assert env["CONVEYOR_DATABASE_URL"]["secretKeyRef"] == {
            "name": "conveyor-connections",
            "key": "url",
        }, name
        if "migrate" not in name:
            assert env["CONVEYOR_AMQP_URL"]["secretKeyRef"]["key"] == "amqp", name
    auth = one(manifests, "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"][0]["key"] == "dsn"
    assert not by_kind(manifests, "Secret") or all(
        not s["metadata"]["name"].endswith("-secret") for s in by_kind(manifests, "Secret")
    )


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("postgresql://u:p@db:5432/tasks", "postgresql+asyncpg://u:p@db:5432/tasks"),
        ("postgres://u:p@db/tasks", "postgresql+asyncpg://u:p@db/tasks"),
        ("postgresql+asyncpg://u:p@db/tasks", "postgresql+asyncpg://u:p@db/tasks"),
    ],
)
def test_a_plain_postgresql_url_gets_the_driver_the_app_uses(url: str, stored: str) -> None:
    secret = one(render(**{"database.url": url}), "Secret", "-secret")["stringData"]
    assert secret["database-url"] == stored
    assert secret["database-dsn"] == stored.replace("postgresql+asyncpg://", "postgresql://")


def test_another_database_driver_is_refused() -> None:
    assert "database/url" in refusal(**{"database.url": "postgresql+psycopg://d/t"})


def test_two_releases_never_share_a_queue() -> None:
    def prefix(*args: str) -> str:
        done = subprocess.run(
            [helm(), "template", *args, str(CHART)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        manifests = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        config = one(manifests, "ConfigMap", "-config")
        return str(config["data"]["CONVEYOR_AMQP_PREFIX"])

    prefixes = {prefix("a", "-n", "one"), prefix("b", "-n", "one"), prefix("a", "-n", "two")}
    assert len(prefixes) == 3, prefixes
    assert prefix("a", "--set", "config.amqpPrefix=shared") == "shared"


@pytest.mark.parametrize("values", [None, *VALUES_FILES], ids=lambda v: v.name if v else "default")
def test_a_cluster_without_keda_or_prometheus_operator_installs(values: Path | None) -> None:
    manifests = render(*([values] if values else []), bare=True)
    assert not [m["kind"] for m in manifests if m["kind"] in OPERATOR_KINDS]
    worker = one(manifests, "Deployment", "-worker")
    assert worker["spec"]["replicas"] >= 1  # fixed, since no KEDA owns the count
    for manifest in manifests:
        if not manifest["apiVersion"].startswith(("conveyor.dev/", "kopf.dev/")):
            kubernetes_validate.validate(manifest, "1.37.0", strict=True)


def test_the_ingress_serves_every_host_with_its_tls() -> None:
    ingress = one(render(CI / "ingress-values.yaml"), "Ingress")
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert hosts == ["tasks.example.com", "tasks.internal.example.com"]
    secrets = {entry["secretName"]: entry["hosts"] for entry in ingress["spec"]["tls"]}
    assert secrets == {
        "tasks-example-com-tls": hosts,
        "tasks-internal-tls": ["tasks.internal.example.com"],
    }


def test_the_service_monitor_takes_timeout_and_relabelings() -> None:
    manifests = render(CI / "monitoring-values.yaml")
    for monitor in by_kind(manifests, "ServiceMonitor"):
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["scrapeTimeout"] == "10s"
        assert endpoint["relabelings"][0]["targetLabel"] == "node"
        assert endpoint["metricRelabelings"][0]["action"] == "drop"
    # What kube-prometheus-stack selects by: its release label, its sidecar's label and folder.
    selected = [*by_kind(manifests, "ServiceMonitor"), *by_kind(manifests, "PrometheusRule")]
    assert {m["metadata"]["labels"]["release"] for m in selected} == {"kube-prometheus-stack"}
    (dashboard,) = [
        m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-dashboard")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Platform"}


def _leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        found += _leaves(value, f"{path}.") if isinstance(value, dict) and value else [path]
    return found


def test_every_value_is_in_the_reference_and_the_reference_is_current() -> None:
    documented = {key for key, _, _ in reference.rows()}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # A leaf is documented itself, or is part of a documented Kubernetes object.
    undocumented = [
        leaf
        for leaf in _leaves(values)
        if not any(".".join(leaf.split(".")[:n]) in documented for n in range(1, 99))
    ]
    assert undocumented == []
    assert reference.REFERENCE.read_text() == reference.render(), (
        "charts/conveyor/VALUES.md is out of date: python -m tests.chart.reference"
    )


def test_the_images_the_chart_and_the_package_carry_one_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert project is not None and project[1] == chart
    for dockerfile in ("Dockerfile.api", "Dockerfile.worker"):
        text = (ROOT / dockerfile).read_text()
        assert f"ARG VERSION={chart}\n" in text, dockerfile
        # No frontend image to fetch: builds work air-gapped.
        assert not text.startswith("# syntax="), dockerfile
        assert "constraints.txt" in text, dockerfile


def test_api_processes_reach_the_api_s_settings() -> None:
    manifests = render(CI / "hpa-values.yaml")
    config = [
        m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-config")
    ]
    defaults = [
        m for m in by_kind(render(), "ConfigMap") if m["metadata"]["name"].endswith("-config")
    ]
    assert [m["data"]["CONVEYOR_API_PROCESSES"] for m in config + defaults] == ["2", "1"]
