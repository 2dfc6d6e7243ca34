"""The chart's life on a real API server: install, upgrade, `helm test`, uninstall and a
reinstall, and every ci/ values file accepted by the server.

Pods are kwok's: they run on the fake node, a Job's pods complete, and no container really
runs. What a container would do runs here instead, as that container would run it: its
args (the image's entrypoint is `conveyor`), and the environment and files the kubelet
would give it, read from the live objects (ConfigMaps, Secrets, the pod's own fields).
So the migration hook's command runs on this machine before each install and upgrade, a
real API, worker and operator run here with their pods' settings, and the `helm test`
pod's command runs here against that API; its exit code becomes the pod's phase.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from services.core.db.engine import create_engine
from services.core.db.migrate import head_revision
from services.core.db.schema import current_revision
from services.core.settings import Settings
from tests.support.env import drop_database
from tests.support.services import free_port
from tests.support.tools import need, tool

if TYPE_CHECKING:
    from tests.support.k8s import ControlPlane

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "conveyor"
# KEDA's and the Prometheus operator's CRDs live beside the checkout, not in it.
SCHEMAS = Path(os.environ.get("CONVEYOR_SCHEMAS", ROOT / "tests" / "schemas"))
OPERATOR_CRDS = (
    "keda.sh_scaledobjects.yaml",
    "keda.sh_triggerauthentications.yaml",
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
)
# The same APIs, as `helm template --api-versions` names them.
OPERATOR_APIS = (
    "keda.sh/v1alpha1/ScaledObject",
    "keda.sh/v1alpha1/TriggerAuthentication",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CONVEYOR = [sys.executable, "-m", "services.cli"]  # the images' entrypoint
# A bound on liveness (a loaded machine once took over 90 s for an install's --wait).
HELM_TIMEOUT = "180s"
COMMAND_TIMEOUT = 240  # a helm or kubectl command given HELM_TIMEOUT, seconds
COMPONENTS = ("api", "worker", "operator")
# What a namespace holds of its own, without any release.
NAMESPACE_OWN = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}
Manifest = dict[str, Any]
Lookup = Callable[[str], dict[str, str]]


# -- the release -----------------------------------------------------------------------------


@dataclass
class Release:
    """One release of the chart in one namespace, with the values it was last given."""

    cluster: ControlPlane
    namespace: str
    name: str
    folder: Path
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def fullname(self) -> str:
        # conveyor.fullname: the release name when it holds the chart's, else both.
        return self.name if "conveyor" in self.name else f"{self.name}-conveyor"

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [tool("helm"), f"--kubeconfig={self.cluster.kubeconfig}", "-n", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if check:
            assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stderr}\n{self.state()}"
        return done

    def state(self) -> str:
        """What the namespace holds and what happened in it, to explain a failed wait."""
        shown = self.cluster.kubectl(
            "-n", self.namespace, "get", "pods,replicasets,deployments,jobs,events",
            "-o", "wide", check=False,
        )  # fmt: skip
        nodes = self.cluster.kubectl("get", "nodes", "-o", "wide", check=False)
        return shown.stdout + shown.stderr + nodes.stdout + nodes.stderr

    def values_file(self) -> Path:
        path = self.folder / f"values-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(self.values))
        return path

    def deploy(self, command: str, **changes: Any) -> subprocess.CompletedProcess[str]:
        """`helm install|upgrade --wait` with the values changed by `changes` (dotted
        keys), after running the migration hook's command here, as its Job would."""
        for dotted, value in changes.items():
            *path, last = dotted.split(".")
            node = self.values
            for key in path:
                node = node.setdefault(key, {})
            node[last] = value
        values = self.values_file()
        migrate_on_host(self, values)
        return self.helm(
            command,
            self.name,
            str(CHART),
            f"--values={values}",
            "--wait",
            f"--timeout={HELM_TIMEOUT}",
        )

    def get(self, *what: str) -> Any:
        return json.loads(
            self.cluster.kubectl("-n", self.namespace, "get", *what, "-o", "json").stdout
        )

    def secret(self, name: str) -> dict[str, str]:
        data = self.get("secret", name).get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def config_map(self, name: str) -> dict[str, str]:
        return dict(self.get("configmap", name).get("data") or {})

    def pods(self, component: str) -> list[Manifest]:
        """The live pods of a component, not being deleted."""
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}"
        pods = self.get("pods", "-l", selector)["items"]
        return [pod for pod in pods if "deletionTimestamp" not in pod["metadata"]]

    def deployment(self, component: str) -> Manifest:
        return self.get("deployment", f"{self.fullname}-{component}")


def base_values(database_url: str, amqp_url: str) -> dict[str, Any]:
    """The machine's PostgreSQL and RabbitMQ; workers at a fixed count (KEDA's CRDs may be
    served here; test_autoscaling.py runs KEDA itself)."""
    return {
        "database": {"url": database_url},
        "broker": {"url": amqp_url},
        "worker": {"replicas": 2, "keda": {"enabled": False}},
    }


@pytest.fixture
def release(cluster: ControlPlane, namespace: str, tmp_path: Path, settings: Settings) -> Release:
    """A release of this test's own, in its namespace, pointed at the test database and on
    the run's queue prefix; the test installs it."""
    return Release(
        cluster,
        namespace,
        f"r-{uuid.uuid4().hex[:6]}",
        tmp_path,
        {
            **base_values(settings.database_url, settings.amqp_url),
            "config": {"amqpPrefix": settings.amqp_prefix},
        },
    )


# -- a kubelet on this machine ---------------------------------------------------------------


def kubelet_env(
    pod: Manifest, container: Manifest, secret: Lookup, config_map: Lookup
) -> dict[str, str]:
    """The environment the kubelet gives `container` of `pod`: envFrom, then env, with
    values from ConfigMaps, Secrets and the pod's own fields, and $(VAR) expanded."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = config_map(source["configMapRef"]["name"])
        else:
            data = secret(source["secretRef"]["name"])
        env.update({source.get("prefix", "") + key: value for key, value in data.items()})
    for item in container.get("env", []):
        if "value" in item:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), item["value"])
        elif ref := item["valueFrom"].get("secretKeyRef"):
            value = secret(ref["name"])[ref["key"]]
        elif ref := item["valueFrom"].get("configMapKeyRef"):
            value = config_map(ref["name"])[ref["key"]]
        elif ref := item["valueFrom"].get("fieldRef"):
            value = pod
            for part in ref["fieldPath"].split("."):
                value = value[part]
        else:
            raise AssertionError(f"no kubelet here for {item}")
        env[item["name"]] = str(value)
    return env


def kubelet_files(
    pod: Manifest, container: Manifest, secret: Lookup, config_map: Lookup, folder: Path
) -> dict[str, Path]:
    """The container's Secret and ConfigMap volumes, written under `folder`: where each
    mount path is on this machine (other volumes, such as /tmp, are the machine's own)."""
    volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes", [])}
    mounted: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" in volume:
            source, data = volume["secret"], secret(volume["secret"]["secretName"])
        elif "configMap" in volume:
            source, data = volume["configMap"], config_map(volume["configMap"]["name"])
        else:
            continue
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        target = folder / pod["metadata"]["name"] / mount["name"]
        target.mkdir(parents=True, exist_ok=True)
        for item in items:
            (target / item["path"]).write_text(data[item["key"]])
        mounted[mount["mountPath"]] = target
    return mounted


def host_command(
    release: Release, pod: Manifest, container_name: str, **overrides: str
) -> tuple[list[str], dict[str, str]]:
    """A live pod's container, to run here with `overrides` (ports, say)."""
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == container_name]
    return container_on_host(
        pod, container, release.secret, release.config_map, release.folder, overrides
    )


def container_on_host(
    pod: Manifest,
    container: Manifest,
    secret: Lookup,
    config_map: Lookup,
    folder: Path,
    overrides: Mapping[str, str],
) -> tuple[list[str], dict[str, str]]:
    """A container as a command line and environment for this machine: `conveyor` (the
    images' entrypoint) with its args, what the kubelet would give it (its mounted files
    under `folder`), then `overrides`."""
    assert "command" not in container, "the image's entrypoint runs its args"
    env = kubelet_env(pod, container, secret, config_map)
    mounted = kubelet_files(pod, container, secret, config_map, folder)
    for key, value in env.items():
        for mount_path, local in mounted.items():
            if value.startswith(f"{mount_path}/"):
                env[key] = f"{local}{value.removeprefix(mount_path)}"
    # The machine's PATH and such, but none of its own Conveyor or cluster settings.
    host = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONVEYOR_", "OTEL_")) and key != "KUBECONFIG"
    }
    return [*CONVEYOR, *container.get("args", [])], {**host, **env, **overrides}


@dataclass
class HostProcess:
    """A process run on this machine in place of a pod's container."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM by pid, as the kubelet does; SIGKILL if it has not ended in 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(argv: list[str], env: dict[str, str], log: Path) -> HostProcess:
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return HostProcess(process, log)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll `check` until it answers something true; that answer."""
    deadline = time.monotonic() + timeout
    while True:
        if found := check():
            return found
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.2)


def migrate_on_host(release: Release, values: Path) -> None:
    """The migration hook's container, rendered with these values, run here: its args
    with the environment its hook Secret gives it (the Job kwok completes runs nothing)."""
    rendered = release.helm(
        "template",
        release.name,
        str(CHART),
        f"--values={values}",
        "--show-only=templates/migration-job.yaml",
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    (job,) = [o for o in objects if o["kind"] == "Job"]
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}

    def secret(name: str) -> dict[str, str]:
        return dict(secrets[name].get("stringData") or {})

    def no_config_map(name: str) -> dict[str, str]:
        raise AssertionError(f"the migration reads no ConfigMap ({name})")

    pod = {"metadata": {"name": job["metadata"]["name"], "namespace": release.namespace}}
    pod["spec"] = job["spec"]["template"]["spec"]
    (container,) = pod["spec"]["containers"]
    argv, env = container_on_host(pod, container, secret, no_config_map, release.folder, {})
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(container['args'])}:\n{done.stderr}"


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process with exactly this CONVEYOR_* environment reads them."""
    for key in os.environ:
        if key.startswith("CONVEYOR_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def assert_available(release: Release) -> None:
    for component in COMPONENTS:
        deployment = release.deployment(component)
        status = deployment["status"]
        available = {c["type"]: c["status"] for c in status["conditions"]}["Available"]
        replicas = (status.get("availableReplicas"), status.get("updatedReplicas"))
        assert available == "True", (component, status)
        assert replicas == (deployment["spec"]["replicas"],) * 2, (component, status)


async def schema_revision(database_url: str) -> str | None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


# -- install ---------------------------------------------------------------------------------


@pytest.fixture
def new_database(settings: Settings) -> Iterator[str]:
    """The URL of a database not made yet, on the test server: the migration makes it."""
    name = f"conveyor_chart_{uuid.uuid4().hex[:8]}"
    yield make_url(settings.database_url).set(database=name).render_as_string(hide_password=False)
    drop_database(name)


def test_an_install_migrates_waits_for_its_deployments_and_configures_valid_settings(
    cluster: ControlPlane,
    namespace: str,
    tmp_path: Path,
    settings: Settings,
    new_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The queue prefix is the chart's default here: <namespace>.<fullname>.
    release = Release(
        cluster, namespace, "first", tmp_path, base_values(new_database, settings.amqp_url)
    )
    release.deploy("install")

    # The migration ran here, on the database the release's Secret names, and made it.
    assert asyncio.run(schema_revision(new_database)) == head_revision()
    # The hook Job completed, as Helm recorded it and the Job controller said.
    status = json.loads(release.helm("status", release.name, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    hooks = {(h["kind"], h["name"]): h for h in status["hooks"]}
    job_name = f"{release.fullname}-migrate"
    assert hooks["Job", job_name]["last_run"]["phase"] == "Succeeded"
    events = release.get("events", f"--field-selector=involvedObject.name={job_name}")["items"]
    assert any(e["involvedObject"]["kind"] == "Job" and e["reason"] == "Completed" for e in events)
    # Then it was deleted, with its copy of the credentials: uninstall never deletes hooks.
    for kind in ("job", "secret"):
        found = release.cluster.kubectl("-n", namespace, "get", kind, job_name, check=False)
        assert "NotFound" in found.stderr, found.stdout

    # The chart's CRDs are served, the Deployments available, the policy made.
    for crd in ("recoverypolicies.conveyor.dev", "kopfpeerings.kopf.dev"):
        conditions = cluster_get(cluster, "crd", crd)["status"]["conditions"]
        assert {"type": "Established", "status": "True"} in [
            {"type": c["type"], "status": c["status"]} for c in conditions
        ]
    assert_available(release)
    assert len(release.pods("api")) == 2 and len(release.pods("worker")) == 2
    policy = release.get("recoverypolicy", release.fullname)
    assert policy["spec"]["leaseSeconds"] == 30
    assert policy["spec"]["workerSelector"]["matchExpressions"][0]["values"] == ["worker"]

    # The ConfigMap, as env with the Secret's URLs, makes valid settings of what was given.
    secret = release.secret(f"{release.fullname}-secret")
    env = {
        **release.config_map(f"{release.fullname}-config"),
        "CONVEYOR_DATABASE_URL": secret["database-url"],
        "CONVEYOR_AMQP_URL": secret["amqp-url"],
    }
    read = settings_from(env, monkeypatch)
    assert read.database_url == new_database
    assert read.amqp_url == settings.amqp_url
    assert read.amqp_prefix == f"{namespace}.{release.fullname}"
    assert read.auth_enabled
    assert [queue.name for queue in read.queues] == ["default"]
    assert (read.lease_seconds, read.api_port, read.log_format) == (30, 8000, "json")


def cluster_get(cluster: ControlPlane, *what: str) -> Any:
    return json.loads(cluster.kubectl("get", *what, "-o", "json").stdout)


# -- upgrade ---------------------------------------------------------------------------------


def test_an_upgrade_with_a_changed_setting_rolls_the_deployments(release: Release) -> None:
    release.deploy("install")
    before = {c: release.deployment(c) for c in COMPONENTS}

    release.deploy("upgrade", **{"config.logLevel": "DEBUG", "worker.replicas": 3})

    history = json.loads(release.helm("history", release.name, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]
    assert release.config_map(f"{release.fullname}-config")["CONVEYOR_LOG_LEVEL"] == "DEBUG"
    for component in COMPONENTS:
        old, new = before[component], release.deployment(component)
        key = "checksum/config"
        old_sum = old["spec"]["template"]["metadata"]["annotations"][key]
        new_sum = new["spec"]["template"]["metadata"]["annotations"][key]
        assert new_sum != old_sum, component
        assert new["metadata"]["generation"] > old["metadata"]["generation"]
        # The rollout ends: every pod is of the new template, and available.
        release.cluster.kubectl(
            "-n", release.namespace, "rollout", "status", f"deployment/{new['metadata']['name']}",
            "--timeout=60s",
        )  # fmt: skip
        pods = release.pods(component)
        assert pods and all(p["metadata"]["annotations"][key] == new_sum for p in pods), component
    assert_available(release)
    assert release.deployment("worker")["spec"]["replicas"] == 3


# -- helm test -------------------------------------------------------------------------------


@dataclass
class HelmTest:
    """One `helm test` run whose pod's command ran here."""

    helm: subprocess.CompletedProcess[str]
    command: subprocess.CompletedProcess[str]


def helm_test(release: Release, api_url: str, **env: str) -> HelmTest:
    """`helm test` in the background; its pod's own command, run here once kwok has the
    pod running, against `api_url` (the one thing changed, with `env` if given); the pod
    then ends Succeeded or Failed by that command's exit code, as a kubelet would say."""
    test_pod = f"{release.fullname}-test-submit"
    earlier = {p["metadata"]["uid"] for p in release.get("pods")["items"]}
    helm = subprocess.Popen(
        [
            tool("helm"), f"--kubeconfig={release.cluster.kubeconfig}", "-n", release.namespace,
            "test", release.name, f"--timeout={HELM_TIMEOUT}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:

        def running() -> Manifest | None:
            assert helm.poll() is None, helm.communicate()
            for pod in release.get("pods")["items"]:
                new = pod["metadata"]["uid"] not in earlier
                if new and pod["metadata"]["name"] == test_pod:
                    return pod if pod["status"].get("phase") == "Running" else None
            return None

        pod = wait_until(running, "the test pod running")
        argv, pod_env = host_command(release, pod, "submit", **env)
        urls = [arg for arg in argv if arg.startswith("--url=")]
        assert urls == [f"--url=http://{release.fullname}-api:80"], argv
        argv = [f"--url={api_url}" if arg.startswith("--url=") else arg for arg in argv]
        command = subprocess.run(argv, env=pod_env, capture_output=True, text=True, timeout=150)
        finish(release, pod, command.returncode)
        out, err = helm.communicate(timeout=120)
    finally:
        if helm.poll() is None:
            helm.kill()
            helm.wait()
    return HelmTest(subprocess.CompletedProcess(helm.args, helm.returncode, out, err), command)


def finish(release: Release, pod: Manifest, exit_code: int) -> None:
    """Write the end of the pod's only container through the status subresource."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    containers = [
        {
            **status,
            "ready": False,
            "started": False,
            "state": {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": status["state"].get("running", {}).get("startedAt", now),
                    "finishedAt": now,
                }
            },
        }
        for status in pod["status"]["containerStatuses"]
    ]
    conditions = [
        {**c, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
        if c["type"] in ("Ready", "ContainersReady")
        else c
        for c in pod["status"].get("conditions", [])
    ]
    phase = "Succeeded" if exit_code == 0 else "Failed"
    patch = {"status": {"phase": phase, "containerStatuses": containers, "conditions": conditions}}
    release.cluster.kubectl(
        "-n", release.namespace, "patch", "pod", pod["metadata"]["name"],
        "--subresource=status", "--type=merge", f"--patch={json.dumps(patch)}",
    )  # fmt: skip


def test_helm_test_passes_when_its_pods_command_succeeds_against_the_api_and_fails_otherwise(
    release: Release,
) -> None:
    release.deploy("install")
    (api_pod, *_) = release.pods("api")
    (worker_pod, *_) = release.pods("worker")
    port = free_port()
    api_argv, api_env = host_command(
        release, api_pod, "api", CONVEYOR_API_HOST="127.0.0.1", CONVEYOR_API_PORT=str(port)
    )
    assert api_env["CONVEYOR_AUTH_ENABLED"] == "true"
    worker_argv, worker_env = host_command(
        release, worker_pod, "worker", CONVEYOR_WORKER_METRICS_PORT=str(free_port())
    )
    assert worker_env["CONVEYOR_WORKER_ID"] == worker_pod["metadata"]["name"]
    api = start(api_argv, api_env, release.folder / "api.log")
    worker = start(worker_argv, worker_env, release.folder / "worker.log")
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert api.process.poll() is None, api.output()
            try:
                return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, "the API ready")

        # With a key the API does not know, the command fails, and so does helm test.
        forged = "cvk_" + "x" * 12 + "_" + "y" * 43
        refused = helm_test(release, url, CONVEYOR_API_KEY=forged)
        assert refused.command.returncode == 4, refused.command.stderr  # refused (401)
        assert "401" in refused.command.stderr
        assert refused.helm.returncode != 0, refused.helm.stdout
        assert "failed" in refused.helm.stderr
        failed = release.get("pod", f"{release.fullname}-test-submit")
        assert failed["status"]["phase"] == "Failed"

        # As the release has it, with the helm-test key from its Secret: the task completes.
        passed = helm_test(release, url)
        assert passed.command.returncode == 0, (passed.command.stderr, worker.output())
        assert json.loads(passed.command.stdout)["status"] == "COMPLETED", passed.command.stdout
        assert passed.helm.returncode == 0, passed.helm.stderr
        assert re.search(r"Phase:\s+Succeeded", passed.helm.stdout), passed.helm.stdout
        key = release.secret(f"{release.fullname}-auth")["helm-test-key"]
        listed = httpx.get(
            f"{url}/api/v1/tasks", headers={"authorization": f"Bearer {key}"}, timeout=10
        ).json()["items"]
        assert [(t["title"], t["kind"], t["status"]) for t in listed] == [
            ("helm test", "noop", "COMPLETED")
        ]
    finally:
        worker.stop()
        api.stop()
    assert "Traceback" not in api.output() + worker.output()


# -- uninstall -------------------------------------------------------------------------------


def operator_kubeconfig(release: Release) -> Path:
    """A kubeconfig of the API server with a token of the chart's operator ServiceAccount."""
    account = f"{release.fullname}-operator"
    token = release.cluster.kubectl(
        "-n", release.namespace, "create", "token", account, "--duration=1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": release.cluster.server,
                    "certificate-authority": str(release.cluster.pki / "ca.crt"),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": account}}],
        "current-context": "operator",
    }
    path = release.folder / "operator.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def leftovers(cluster: ControlPlane, namespace: str) -> list[str]:
    """Every object in the namespace but its own account and CA bundle, and Events."""
    kinds = cluster.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout
    listed = cluster.kubectl("-n", namespace, "get", ",".join(kinds.split()), "-o", "json")
    found = []
    for item in json.loads(listed.stdout)["items"]:
        kind, name = item["kind"], item["metadata"]["name"]
        if kind != "Event" and (kind, name) not in NAMESPACE_OWN:
            found.append(f"{kind}/{name}")
    return found


def test_an_uninstall_leaves_nothing_and_the_namespace_can_go_and_come_back(
    release: Release,
) -> None:
    release.deploy("install")
    (operator_pod,) = release.pods("operator")
    argv, env = host_command(
        release,
        operator_pod,
        "operator",
        CONVEYOR_OPERATOR_HEALTH_PORT=str(free_port()),
        KUBECONFIG=str(operator_kubeconfig(release)),
    )
    assert env["CONVEYOR_OPERATOR_NAMESPACE"] == release.namespace
    operator = start(argv, env, release.folder / "operator.log")
    try:

        def swept() -> Manifest | None:
            assert operator.process.poll() is None, operator.output()
            policy: Manifest = release.get("recoverypolicy", release.fullname)
            return policy if "lastSweep" in policy.get("status", {}) else None

        policy = wait_until(swept, f"a sweep\n{operator.output()}")
        assert policy["status"]["inProgress"] == 0
        assert not policy["metadata"].get("finalizers"), policy["metadata"]

        release.helm("uninstall", release.name, "--wait", f"--timeout={HELM_TIMEOUT}")
    finally:
        operator.stop()

    # What Kubernetes removes after Helm (a Job's pods, say) goes; nothing else is left.
    try:
        wait_until(lambda: not leftovers(release.cluster, release.namespace), "an empty namespace")
    except AssertionError:
        raise AssertionError(
            f"left after the uninstall: {leftovers(release.cluster, release.namespace)}"
        ) from None
    release.cluster.kubectl("delete", "namespace", release.namespace, "--wait=false")
    release.cluster.kubectl(
        "wait",
        "--for=delete",
        f"namespace/{release.namespace}",
        f"--timeout={HELM_TIMEOUT}",
        timeout=COMMAND_TIMEOUT,
    )

    release.cluster.kubectl("create", "namespace", release.namespace)
    release.deploy("install")
    assert_available(release)
    release.helm("uninstall", release.name, "--wait", f"--timeout={HELM_TIMEOUT}")


# -- every values file -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def operator_crds(cluster: ControlPlane) -> None:
    """KEDA's and the Prometheus operator's CRDs, and the chart's own, served by the
    cluster: the APIs the ci/ values files use."""
    need(f"the CRDs of KEDA and the Prometheus operator in {SCHEMAS}", SCHEMAS.is_dir())
    files = [SCHEMAS / name for name in OPERATOR_CRDS] + sorted((CHART / "crds").glob("*.yaml"))
    args = ["apply", "--server-side", "--force-conflicts"]
    cluster.kubectl(*args, *(f"--filename={path}" for path in files))
    names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in files]
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)
    )


def render_offline(values: Path) -> list[Manifest]:
    """`helm template` for a cluster with KEDA and the Prometheus operator."""
    args = [tool("helm"), "template", "offline", str(CHART), f"--values={values}"]
    args += [f"--api-versions={api}" for api in OPERATOR_APIS]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def pod_spec(manifest: Manifest) -> dict[str, Any] | None:
    """The pod spec of a Pod, or of a workload's template, if it names a PriorityClass."""
    spec = manifest.get("spec", {})
    if manifest["kind"] != "Pod":
        spec = spec.get("template", {}).get("spec", {})
    return spec if "priorityClassName" in spec else None


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_every_ci_values_file_is_accepted_by_the_api_server(
    cluster: ControlPlane, namespace: str, operator_crds: None, values: Path
) -> None:
    name = values.name.removesuffix("-values.yaml")
    done = subprocess.run(
        [
            tool("helm"), f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "install",
            f"ci-{name}", str(CHART), f"--values={values}", "--dry-run=server", "-o", "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    dry_run = json.loads(done.stdout)
    objects = [doc for doc in yaml.safe_load_all(dry_run["manifest"]) if doc]
    for hook in dry_run["hooks"]:
        objects += [doc for doc in yaml.safe_load_all(hook["manifest"]) if doc]
    # What the live cluster's APIs made the chart render is all it renders for a cluster
    # with KEDA and the Prometheus operator: their objects are among those sent.
    assert collections.Counter(o["kind"] for o in objects) == collections.Counter(
        o["kind"] for o in render_offline(values)
    )

    # The PriorityClasses the values name are the cluster's (the API server checks a Pod's).
    for priority in {spec["priorityClassName"] for spec in map(pod_spec, objects) if spec}:
        priority_class = {"metadata": {"name": priority}, "value": 1000}
        priority_class |= {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass"}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(priority_class))
    # Pods are admitted once the namespace's default account is there.
    cluster.kubectl(
        "-n", namespace, "wait", "--for=create", "serviceaccount/default", "--timeout=30s"
    )

    applied = cluster.kubectl(
        "-n", namespace, "apply", "--dry-run=server", "--validate=strict", "-o", "name", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert "Warning" not in applied.stderr, applied.stderr
    assert len(applied.stdout.split()) == len(objects), applied.stdout
