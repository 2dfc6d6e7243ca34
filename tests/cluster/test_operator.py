"""The operator on a real API server, logged in as the chart's ServiceAccount: the chart's
RBAC is all it may use, and the real authorizer decides.

The chart's operator RBAC, its KopfPeering and its RecoveryPolicy are rendered by helm
into the test's namespace; the operator is a real `conveyor operator` process on this
machine, with the environment the chart's Deployment gives it and a kubeconfig holding a
token of that ServiceAccount; its tasks are in the test database. Worker pods are kwok's
(Running on the fake node, no container runs). What the operator asked of the API server,
and what it was answered, is read from the API server's audit log.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from services.core.db.store import SqlTaskStore
from services.core.domain import Status
from services.core.settings import Settings
from tests.cluster.conftest import NODE
from tests.support.cluster import held_by, status_of, until
from tests.support.database import expire_lease
from tests.support.env import settings_env
from tests.support.services import free_port
from tests.support.tools import tool

if TYPE_CHECKING:
    from tests.support.k8s import ControlPlane

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "conveyor"
RELEASE = "conveyor"
TEMPLATES = ("operator-rbac.yaml", "operator-deployment.yaml", "worker-deployment.yaml")
# Every verb the authorizer knows for a resource; the Role grants some of them.
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
Permission = tuple[str, str, str]  # (API group, resource[/subresource], verb)


# -- the chart -------------------------------------------------------------------------------


@dataclass
class Install:
    """What the chart rendered into one namespace, and what of it was applied."""

    namespace: str
    objects: list[dict[str, Any]]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        (found,) = [
            o
            for o in self.objects
            if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)
        ]
        return found

    @property
    def account(self) -> str:
        """The operator's ServiceAccount, as the authorizer names its user."""
        name = self.one("ServiceAccount", "-operator")["metadata"]["name"]
        return f"system:serviceaccount:{self.namespace}:{name}"

    @property
    def role(self) -> dict[str, Any]:
        return self.one("Role", "-operator")

    def granted(self) -> set[Permission]:
        return {
            (group, resource, verb)
            for rule in self.role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }

    @property
    def policy(self) -> dict[str, Any]:
        return self.one("RecoveryPolicy")

    @property
    def worker_labels(self) -> dict[str, str]:
        """The labels of the chart's worker pods."""
        worker = self.one("Deployment", "-worker")
        return dict(worker["spec"]["template"]["metadata"]["labels"])

    def operator_env(self) -> dict[str, str]:
        """The operator's own variables, as its Deployment sets them in this namespace."""
        deployment = self.one("Deployment", "-operator")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env: dict[str, str] = {}
        for item in container["env"]:
            if not item["name"].startswith("CONVEYOR_OPERATOR_"):
                continue  # the database and the broker come from the test's settings
            source = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            assert "value" in item or source == "metadata.namespace", item
            env[item["name"]] = item.get("value", self.namespace)
        return env


def render(namespace: str) -> list[dict[str, Any]]:
    """The chart's operator and worker objects, as `helm install -n namespace` makes them
    (a sweep every second, so that a test waits for one)."""
    args = [tool("helm"), "template", RELEASE, str(CHART), "--namespace", namespace]
    args += [f"--show-only=templates/{name}" for name in TEMPLATES]
    args += ["--set", "operator.sweepIntervalSeconds=1"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def apply(cluster: ControlPlane, namespace: str, *objects: dict[str, Any]) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))


def get(cluster: ControlPlane, namespace: str, *what: str) -> Any:
    return json.loads(cluster.kubectl("-n", namespace, "get", *what, "-o", "json").stdout)


@pytest.fixture(scope="module")
def crds(cluster: ControlPlane) -> None:
    """The chart's CRDs (crds/: helm installs them before anything else)."""
    cluster.kubectl("apply", "-f", str(CHART / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        "crd/recoverypolicies.conveyor.dev", "crd/kopfpeerings.kopf.dev",
    )  # fmt: skip


@pytest.fixture
def chart(cluster: ControlPlane, namespace: str, crds: None) -> Install:
    """The chart's operator ServiceAccount, Role, RoleBinding and KopfPeering, in the
    test's namespace; its RecoveryPolicy is rendered, for the test to apply."""
    install = Install(namespace, render(namespace))
    kinds = {"ServiceAccount", "Role", "RoleBinding", "KopfPeering"}
    apply(cluster, namespace, *(o for o in install.objects if o["kind"] in kinds))
    return install


# -- the operator ----------------------------------------------------------------------------


@dataclass
class Operator:
    """A `conveyor operator` process logged in as the chart's ServiceAccount."""

    process: subprocess.Popen[bytes]
    log_path: Path
    account: str
    cluster: ControlPlane
    # The audit log is read on from where it ended when the operator started.
    audit_offset: int = 0
    audited: list[dict[str, Any]] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def requests(self) -> list[dict[str, Any]]:
        """The audit log's record of every request made as the operator's account (not
        impersonating it: `kubectl auth can-i --as` is the admin's request)."""
        with self.cluster.audit_log.open("rb") as log:
            log.seek(self.audit_offset)
            new = log.read()
        complete = new[: new.rfind(b"\n") + 1]  # a last line may be half written
        self.audit_offset += len(complete)
        user = f'"username":"{self.account}"'.encode()
        for line in complete.splitlines():
            if user in line:
                event = json.loads(line)
                if event["user"]["username"] == self.account:
                    self.audited.append(event)
        return list(self.audited)

    def used(self) -> set[Permission]:
        return {
            permission(event)
            for event in self.requests()
            if "objectRef" in event and "resource" in event["objectRef"]
        }

    def denied(self) -> list[str]:
        return [
            f"{e['verb']} {e['requestURI']}: {e['responseStatus']['code']}"
            for e in self.requests()
            if e.get("responseStatus", {}).get("code") in (401, 403)
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def permission(event: dict[str, Any]) -> Permission:
    ref = event["objectRef"]
    resource = ref["resource"]
    if ref.get("subresource"):
        resource = f"{resource}/{ref['subresource']}"
    return ref.get("apiGroup", ""), resource, event["verb"]


def kubeconfig(cluster: ControlPlane, install: Install, folder: Path) -> Path:
    """A kubeconfig of the API server with a token of the operator's ServiceAccount."""
    account = install.one("ServiceAccount", "-operator")["metadata"]["name"]
    token = cluster.kubectl(
        "-n", install.namespace, "create", "token", account, "--duration=1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.pki / "ca.crt"),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": "test", "user": account, "namespace": install.namespace},
            }
        ],
        "current-context": "operator",
    }
    path = folder / "operator.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


async def poll(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Until `check()` (a plain function) answers something true; that answer."""

    async def checked() -> Any:
        return check()

    return await until(checked, timeout)


def start_operator(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`conveyor operator` with `env`, its output in `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "operator"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
async def operator(
    cluster: ControlPlane, chart: Install, settings: Settings, tmp_path: Path
) -> AsyncIterator[Operator]:
    """`conveyor operator`, as the chart's Deployment runs it, logged in as its
    ServiceAccount; once its health endpoint answers. Afterwards: it was never refused."""
    health_port = free_port()
    env = {
        **settings_env(settings),
        **chart.operator_env(),
        "CONVEYOR_OPERATOR_HEALTH_PORT": str(health_port),
        "KUBECONFIG": str(kubeconfig(cluster, chart, tmp_path)),
    }
    assert env["CONVEYOR_OPERATOR_NAMESPACE"] == chart.namespace
    log_path = tmp_path / "operator.log"
    audited_until = cluster.audit_log.stat().st_size
    process = start_operator(env, log_path)
    running = Operator(process, log_path, chart.account, cluster, audited_until)
    try:

        def healthy() -> bool:
            assert process.poll() is None, f"the operator exited:\n{running.log()}"
            try:
                url = f"http://127.0.0.1:{health_port}/healthz"
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        await poll(healthy, timeout=30)
        yield running
    finally:
        running.stop()
    assert not running.denied(), f"the API server refused the operator: {running.denied()}"
    assert "forbidden" not in running.log().lower(), running.log()
    # It stopped cleanly on SIGTERM, as in a rollout: its sweep stopped with it, nothing
    # was left to retry against a closed connection or to be killed by kopf's grace period.
    assert process.returncode == 0, running.log()
    stopping = running.log().partition("Operator is stopping")[2]
    assert not re.search(r"^\S+ \S+ ERROR", stopping, re.MULTILINE), stopping


# -- what a test does ------------------------------------------------------------------------


def apply_policy(cluster: ControlPlane, install: Install, **metadata: Any) -> None:
    """The chart's RecoveryPolicy, with more metadata (finalizers: as an upgrade finds it)."""
    policy = json.loads(json.dumps(install.policy))
    policy["metadata"].update(metadata)
    apply(cluster, install.namespace, policy)


def policy_status(cluster: ControlPlane, install: Install, key: str) -> dict[str, Any] | None:
    """The policy's status once it has `key`."""
    name = install.policy["metadata"]["name"]
    status = get(cluster, install.namespace, "recoverypolicy", name).get("status") or {}
    return status if key in status else None


def policy_events(cluster: ControlPlane, install: Install) -> list[dict[str, Any]]:
    name = install.policy["metadata"]["name"]
    selector = f"involvedObject.kind=RecoveryPolicy,involvedObject.name={name}"
    items: list[dict[str, Any]] = get(
        cluster, install.namespace, "events", f"--field-selector={selector}"
    )["items"]
    return items


def worker_pod(install: Install, name: str) -> dict[str, Any]:
    """A pod of the chart's workers, on the fake node: kwok runs it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": install.worker_labels},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": False,
            "containers": [{"name": "worker", "image": "registry.invalid/conveyor-worker:never"}],
        },
    }


async def run_worker_pods(cluster: ControlPlane, install: Install, *names: str) -> None:
    """Worker pods, Running; once the namespace has the service account pods need."""
    await poll(
        lambda: (
            cluster.kubectl(
                "-n", install.namespace, "get", "serviceaccount", "default", check=False
            ).returncode
            == 0
        )
    )
    apply(cluster, install.namespace, *(worker_pod(install, name) for name in names))
    cluster.kubectl(
        "-n", install.namespace, "wait", "--for=jsonpath={.status.phase}=Running",
        "--timeout=30s", *(f"pod/{name}" for name in names),
    )  # fmt: skip


async def watching(operator: Operator, group: str, resource: str) -> None:
    """Until the operator has listed `resource` (its watch goes on from that list)."""

    def listed() -> bool:
        return any(
            permission(e) == (group, resource, "list")
            and e.get("stage") == "ResponseComplete"
            and e["responseStatus"]["code"] == 200
            for e in operator.requests()
            if "objectRef" in e
        )

    await poll(listed)


def has_status(
    store: SqlTaskStore, task_id: uuid.UUID, status: Status
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await status_of(store, task_id) is status

    return check


# -- the tests -------------------------------------------------------------------------------


async def test_the_operator_logs_in_as_the_charts_service_account_and_joins_its_peering(
    cluster: ControlPlane, chart: Install, operator: Operator
) -> None:
    await watching(operator, "conveyor.dev", "recoverypolicies")
    await watching(operator, "", "pods")
    requests = operator.requests()
    assert requests, "no request was made as the chart's ServiceAccount"
    # Everything it asked about is in its own namespace (discovery aside).
    namespaces = {e["objectRef"].get("namespace") for e in requests if "objectRef" in e}
    assert namespaces == {chart.namespace}
    # Peering as the chart sets it: this replica is in the chart's KopfPeering.
    name = chart.one("KopfPeering")["metadata"]["name"]

    def peers() -> dict[str, Any] | None:
        return get(cluster, chart.namespace, "kopfpeering", name).get("status")

    assert await poll(peers), "the operator did not announce itself in its peering"


async def test_a_policy_is_swept_and_its_expired_lease_handed_back_with_an_event(
    cluster: ControlPlane,
    chart: Install,
    operator: Operator,
    store: SqlTaskStore,
    settings: Settings,
) -> None:
    expired = await held_by(store, "vanished-pod")
    await expire_lease(settings.database_url, expired)
    await held_by(store, "live-pod")  # in progress, its lease running
    apply_policy(cluster, chart)

    status = await poll(lambda: policy_status(cluster, chart, "requeued"))
    assert status["requeued"] == 1
    assert status["inProgress"] == 1
    assert "lastSweep" in status
    assert await status_of(store, expired) is Status.PENDING

    def requeued() -> list[dict[str, Any]]:
        return [
            e
            for e in policy_events(cluster, chart)
            if e["reason"] == "Requeued" and str(expired) in e["message"]
        ]

    (event,) = await poll(requeued)
    assert "lease expired" in event["message"]

    name = chart.policy["metadata"]["name"]
    policy = get(cluster, chart.namespace, "recoverypolicy", name)
    assert not policy["metadata"].get("finalizers")
    # Nothing holds it: the delete is done when kubectl returns, well before its timeout.
    cluster.kubectl(
        "-n", chart.namespace, "delete", "recoverypolicy", name, "--wait=true", "--timeout=10s"
    )
    gone = cluster.kubectl("-n", chart.namespace, "get", "recoverypolicy", name, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert operator.process.poll() is None


async def test_a_deleted_worker_pods_tasks_come_back_at_once_and_no_one_elses(
    cluster: ControlPlane, chart: Install, operator: Operator, store: SqlTaskStore
) -> None:
    apply_policy(cluster, chart)
    await poll(lambda: policy_status(cluster, chart, "lastSweep"))
    mine_pod, their_pod = "conveyor-worker-5d8f7-mine", "conveyor-worker-5d8f7-theirs"
    await run_worker_pods(cluster, chart, mine_pod, their_pod)
    await watching(operator, "", "pods")
    # Held with a 300 s lease: only the pod's deletion can bring them back within the test.
    mine = [await held_by(store, mine_pod) for _ in range(2)]
    theirs = await held_by(store, their_pod)

    cluster.kubectl("-n", chart.namespace, "delete", "pod", mine_pod, "--wait=false")
    for task_id in mine:
        await until(has_status(store, task_id, Status.PENDING), timeout=15)
    assert await status_of(store, theirs) is Status.IN_PROGRESS

    def events() -> list[dict[str, Any]]:
        return [
            e
            for e in policy_events(cluster, chart)
            if e["reason"] == "Requeued" and f"worker pod {mine_pod} deleted" in e["message"]
        ]

    found = await poll(lambda: len(events()) == 2 and events())
    assert {str(t) for t in mine} == {e["message"].split()[1].rstrip(":") for e in found}


async def test_the_service_account_may_do_exactly_what_the_operator_does(
    cluster: ControlPlane,
    chart: Install,
    operator: Operator,
    store: SqlTaskStore,
    settings: Settings,
) -> None:
    # Everything the operator does: take in a policy an earlier release left a finalizer
    # on (and take it off), sweep and requeue with an Event, see a worker pod go.
    expired = await held_by(store, "vanished-pod")
    await expire_lease(settings.database_url, expired)
    apply_policy(cluster, chart, finalizers=["kopf.zalando.org/KopfFinalizerMarker"])
    await poll(lambda: policy_status(cluster, chart, "requeued"))
    name = chart.policy["metadata"]["name"]
    await poll(
        lambda: (
            not get(cluster, chart.namespace, "recoverypolicy", name)["metadata"].get("finalizers")
        )
    )
    pod = "conveyor-worker-5d8f7-gone"
    await run_worker_pods(cluster, chart, pod)
    await watching(operator, "", "pods")
    task_id = await held_by(store, pod)
    cluster.kubectl("-n", chart.namespace, "delete", "pod", pod, "--wait=false")
    await until(has_status(store, task_id, Status.PENDING), timeout=15)
    await poll(lambda: len(policy_events(cluster, chart)) >= 2)
    operator.stop()

    # The real authorizer, asked about the operator's ServiceAccount.
    granted = chart.granted()
    asked: dict[tuple[str, ...], bool] = {}
    for group, resource in {(g, r) for g, r, _ in granted}:
        for verb in VERBS:
            asked[(verb, *resource_args(group, resource), "-n", chart.namespace)] = (
                group,
                resource,
                verb,
            ) in granted
    other = "default"
    for args in (
        ("delete", "pods"),
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "pods"),
        ("create", "pods", "--subresource=eviction"),
    ):
        asked[(*args, "-n", chart.namespace)] = False
    for group, resource, verb in granted:  # nothing in another namespace
        asked[(verb, *resource_args(group, resource), "-n", other)] = False
    for args in (
        ("list", "nodes"),
        ("get", "namespaces"),
        ("list", "namespaces"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ("list", "clusterroles.rbac.authorization.k8s.io"),
        ("list", "pods", "--all-namespaces"),
    ):
        asked[args] = False
    answers = await asyncio.gather(*(can_i(cluster, chart, args) for args in asked))
    wrong = {
        " ".join(args): answer
        for (args, allowed), answer in zip(asked.items(), answers, strict=True)
        if answer != allowed
    }
    assert not wrong, f"the authorizer's answers that differ from the Role: {wrong}"

    # And it needs all of it: every permission granted was used, nothing used was refused.
    used = operator.used()
    assert not operator.denied()
    assert used <= granted, f"used but not granted: {used - granted}"
    assert granted <= used, f"granted but never used: {granted - used}"


def resource_args(group: str, resource: str) -> list[str]:
    """`kubectl auth can-i` arguments naming a resource of a group (core: plain)."""
    plural, _, sub = resource.partition("/")
    named = f"{plural}.{group}" if group else plural
    return [named, f"--subresource={sub}"] if sub else [named]


async def can_i(cluster: ControlPlane, install: Install, args: tuple[str, ...]) -> bool:
    """`kubectl auth can-i ARGS`, asked as the operator's ServiceAccount."""
    result = await asyncio.to_thread(
        cluster.kubectl, "auth", "can-i", *args, f"--as={install.account}", check=False
    )
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout.strip() in ("yes", "no"), result.stdout
    return result.stdout.strip() == "yes"
