"""The chart renders, validates against Kubernetes and CRD schemas, and keeps its promises."""

from __future__ import annotations

import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.render import (
    CHART,
    ROOT,
    VALUES_FILES,
    by_kind,
    crd_schemas,
    helm,
    one,
    pod_specs,
    refusal,
    render,
    validate_custom,
    validate_skaffold,
)

# The oldest and the newest Kubernetes the chart supports (Chart.yaml kubeVersion >=1.27).
KUBERNETES = ["1.27.0", "1.37.0"]
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/", "conveyor.dev/", "kopf.dev/")
OWN_GROUPS = ("conveyor.dev/", "kopf.dev/")


def test_helm_lint_strict() -> None:
    done = subprocess.run(
        [helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_worker_whose_loops_keep_failing_is_restarted() -> None:
    worker = one(render(), "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0]
    probe = worker["livenessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/health/live", "metrics")
    assert "metrics" in {port["name"] for port in worker["ports"]}


def test_the_hardening_settings_reach_every_process() -> None:
    config = one(
        render(**{"api.tenantMaxRequests": "6", "config.tenantMaxRunning": "20"}),
        "ConfigMap",
        "-config",
    )["data"]
    assert config["CONVEYOR_TENANT_MAX_REQUESTS"] == "6"
    assert config["CONVEYOR_TENANT_MAX_RUNNING"] == "20"
    assert config["CONVEYOR_HTTP_READ_TIMEOUT_SECONDS"] == "10"
    assert config["CONVEYOR_HTTP_MAX_CONNECTIONS"] == "1000"
    assert config["CONVEYOR_DEFAULT_TIMEOUT_SECONDS"] == "3600"
    assert "tenantMaxRequests" in refusal(**{"api.tenantMaxRequests": "0"})


@pytest.mark.parametrize("values", [None, *VALUES_FILES], ids=lambda v: v.name if v else "default")
def test_every_values_file_renders_valid_objects(values: Path | None) -> None:
    manifests = render(*([values] if values else []))
    custom = [m for m in manifests if m["apiVersion"].startswith(CUSTOM_GROUPS)]
    for manifest in manifests:
        if manifest in custom:
            continue
        for version in KUBERNETES:
            kubernetes_validate.validate(manifest, version, strict=True)
    if custom:
        shared = any(not m["apiVersion"].startswith(OWN_GROUPS) for m in custom)
        schemas = crd_schemas(shared)
        for manifest in custom:
            validate_custom(manifest, schemas)


def test_bad_values_are_refused_by_the_schema() -> None:
    assert "concurrency" in refusal(**{"worker.concurrency": "0"})


def test_the_migration_is_a_hook_that_every_upgrade_runs_again() -> None:
    manifests = render()
    job = one(manifests, "Job", "-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    # Its Secret is a hook too, made before it: the release's own Secret does not exist yet.
    secret_name = job["spec"]["template"]["spec"]["containers"][0]["env"][1]["valueFrom"][
        "secretKeyRef"
    ]["name"]
    secret = next(m for m in by_kind(manifests, "Secret") if m["metadata"]["name"] == secret_name)
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_gitops_runs_the_migration_as_a_plain_job() -> None:
    manifests = render(CHART / "ci" / "gitops-values.yaml")
    job = one(manifests, "Job")
    assert "annotations" not in job["metadata"]
    assert all(
        "helm.sh/hook" not in m["metadata"].get("annotations", {})
        for m in manifests
        if m["kind"] != "Pod"
    )


def test_keda_owns_the_worker_count_and_counts_running_tasks() -> None:
    manifests = render()
    worker = one(manifests, "Deployment", "-worker")
    assert "replicas" not in worker["spec"]
    scaled = one(manifests, "ScaledObject")
    assert scaled["spec"]["minReplicaCount"] == 0
    trigger = scaled["spec"]["triggers"][0]
    assert all(isinstance(value, str) for value in trigger["metadata"].values())
    assert "IN_PROGRESS" in trigger["metadata"]["query"]
    auth = one(manifests, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"][0]["key"] == "database-dsn"
    off = render(CHART / "ci" / "keda-off-values.yaml")
    assert one(off, "Deployment", "-worker")["spec"]["replicas"] == 3
    assert not by_kind(off, "ScaledObject")


def test_the_grace_period_covers_the_drain() -> None:
    worker = one(render(**{"worker.drainSeconds": "100"}), "Deployment", "-worker")
    spec = worker["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > 100
    env = {item["name"]: item.get("value") for item in spec["containers"][0]["env"]}
    assert env["CONVEYOR_DRAIN_SECONDS"] == "100"


def test_the_api_has_probes_on_the_health_endpoints() -> None:
    api = one(render(), "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"


@pytest.mark.parametrize("values", [None, *VALUES_FILES], ids=lambda v: v.name if v else "default")
def test_every_pod_runs_locked_down(values: Path | None) -> None:
    for owner, spec in pod_specs(render(*([values] if values else []))):
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        # Only the operator talks to the Kubernetes API.
        assert spec["automountServiceAccountToken"] is owner.endswith("-operator"), owner
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, owner
            assert context["allowPrivilegeEscalation"] is False, owner
            assert context["capabilities"]["drop"] == ["ALL"], owner
            assert container["resources"]["limits"]["memory"], owner


def test_one_tag_for_every_image() -> None:
    manifests = render(**{"image.tag": "1.2.3"})
    images = {c["image"] for _, spec in pod_specs(manifests) for c in spec["containers"]}
    assert {image.rsplit(":", 1)[1] for image in images} == {"1.2.3"}
    assert len(images) == 2  # the API and the worker images


def test_no_secret_in_a_configmap() -> None:
    manifests = render(
        **{
            "database.url": "postgresql+asyncpg://u:hunter2@db/c",
            "broker.url": "amqp://u:hunter2@mq/",
        }
    )
    for config in by_kind(manifests, "ConfigMap"):
        assert "hunter2" not in str(config["data"]), config["metadata"]["name"]
    secret = one(manifests, "Secret", "-secret")
    assert secret["stringData"]["database-dsn"] == "postgresql://u:hunter2@db/c"
    existing = render(CHART / "ci" / "existing-secret-values.yaml")
    assert not [s for s in by_kind(existing, "Secret") if "hunter2" in str(s)]
    env = one(existing, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e}
    assert refs == {"conveyor-credentials"}


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(**sets: str) -> str:
        api = one(render(**sets), "Deployment", "-api")
        return api["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() != checksum(**{"config.leaseSeconds": "60"})


def test_the_ingress_serves_the_api_and_the_console_and_never_metrics() -> None:
    ingress = one(render(CHART / "ci" / "ingress-values.yaml"), "Ingress")
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert {"/api", "/ui"} <= set(paths) and not [p for p in paths if p in ("/", "/metrics")]


def test_the_console_links_traces_where_the_values_say() -> None:
    url = "http://tempo.example/trace/{trace_id}"
    config = one(render(**{"console.traceUrl": url}), "ConfigMap", "-config")["data"]
    assert config["CONVEYOR_TRACE_URL"] == url
    assert "CONVEYOR_TRACE_URL" not in one(render(), "ConfigMap", "-config")["data"]


def test_monitoring_objects_carry_the_rules_and_the_dashboard() -> None:
    manifests = render(CHART / "ci" / "monitoring-values.yaml")
    rule = one(manifests, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "ConveyorBacklogWithoutWorkers" in alerts
    dashboard = one(manifests, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert len(by_kind(manifests, "ServiceMonitor")) == 2


def test_helm_test_submits_a_task_and_waits() -> None:
    pod = next(m for m in render() if m["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = pod["spec"]["containers"][0]["args"]
    assert args[0] == "submit" and "--wait=120" in args


def test_skaffold_yaml_is_valid() -> None:
    validate_skaffold(ROOT / "skaffold.yaml")


def test_skaffold_deploys_postgresql_and_rabbitmq_before_the_release() -> None:
    """One config's helm deployer runs before its kubectl one: the release's migration hook
    would wait for a database not yet applied. A required config is deployed first."""
    services, app = yaml.safe_load_all((ROOT / "skaffold.yaml").read_text())
    assert services["manifests"]["rawYaml"] == ["k8s/postgres.yaml", "k8s/rabbitmq.yaml"]
    assert set(services["deploy"]) == {"kubectl"}
    assert app["requires"] == [{"configs": [services["metadata"]["name"]]}]
    assert "manifests" not in app and set(app["deploy"]) == {"helm"}


def test_the_chart_crds_are_valid_kubernetes_objects() -> None:
    for path in sorted((CHART / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in KUBERNETES:
            kubernetes_validate.validate(crd, version, strict=True)


def test_the_sample_recovery_policy_is_valid() -> None:
    sample = yaml.safe_load((ROOT / "k8s" / "recoverypolicy.yaml").read_text())
    validate_custom(sample, crd_schemas(False))
    bad = {**sample, "spec": {**sample["spec"], "sweepEvery": 5}}
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(bad, crd_schemas(False))


def test_the_operator_runs_alone_with_its_policy() -> None:
    manifests = render()
    deployment = one(manifests, "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    spec = deployment["spec"]["template"]["spec"]
    assert spec["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    policy = one(manifests, "RecoveryPolicy")
    worker = one(manifests, "Deployment", "-worker")
    selector = policy["spec"]["workerSelector"]["matchLabels"]
    assert selector.items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    config = one(manifests, "ConfigMap", "-config")
    assert str(policy["spec"]["leaseSeconds"]) == config["data"]["CONVEYOR_LEASE_SECONDS"]
    assert not by_kind(render(CHART / "ci" / "operator-off-values.yaml"), "RecoveryPolicy")
