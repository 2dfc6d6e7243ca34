"""The control plane itself does what the cluster tests rely on: a Deployment's pods run
on the fake node, which stays Ready, a Job completes, service accounts get tokens, and RBAC
decides."""

from __future__ import annotations

import ipaddress
import json
import time
from typing import TYPE_CHECKING, Any

import httpx

from tests.cluster.conftest import NODE

if TYPE_CHECKING:
    from tests.support.k8s import ControlPlane

IMAGE = "registry.invalid/conveyor-test:never-pulled"  # kwok pulls nothing


def apply(cluster: ControlPlane, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))


def get(cluster: ControlPlane, namespace: str, *what: str) -> Any:
    return json.loads(cluster.kubectl("-n", namespace, "get", *what, "-o", "json").stdout)


def container(name: str) -> dict[str, Any]:
    return {"name": name, "image": IMAGE}


def test_a_deployments_pods_run_on_the_fake_node(cluster: ControlPlane, namespace: str) -> None:
    labels = {"app": "web"}
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [container("web")]},
                },
            },
        },
    )
    cluster.kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")

    pods = get(cluster, namespace, "pods", "-l", "app=web")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE  # scheduled
        assert pod["status"]["phase"] == "Running"  # and run, by kwok
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network("10.244.0.0/16")
    assert get(cluster, namespace, "deployment", "web")["status"]["availableReplicas"] == 2


def test_a_job_completes(cluster: ControlPlane, namespace: str) -> None:
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": [container("once")]}},
            },
        },
    )
    cluster.kubectl(
        "-n", namespace, "wait", "--for=condition=Complete", "job/once", "--timeout=60s"
    )

    assert get(cluster, namespace, "job", "once")["status"]["succeeded"] == 1
    (pod,) = get(cluster, namespace, "pods", "-l", "job-name=once")["items"]
    assert pod["status"]["phase"] == "Succeeded"


def test_a_service_account_token_authenticates_as_its_account(
    cluster: ControlPlane, namespace: str
) -> None:
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "robot")
    token = cluster.kubectl("-n", namespace, "create", "token", "robot").stdout.strip()

    answer = httpx.post(
        f"{cluster.server}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        headers={"Authorization": f"Bearer {token}"},
        verify=cluster.tls(user=None),
    )
    answer.raise_for_status()
    user = answer.json()["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:robot"
    assert f"system:serviceaccounts:{namespace}" in user["groups"]
    # The controller manager's work in every namespace: its default account, the root CA.
    get(cluster, namespace, "serviceaccount", "default")
    assert "ca.crt" in get(cluster, namespace, "configmap", "kube-root-ca.crt")["data"]


def test_can_i_answers_from_rbac(cluster: ControlPlane, namespace: str) -> None:
    account = f"system:serviceaccount:{namespace}:robot"
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "robot")
    cluster.kubectl(
        "-n", namespace, "create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods"
    )
    cluster.kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "robot-reads-pods",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:robot",
    )

    def can_i(*args: str) -> str:
        result = cluster.kubectl("auth", "can-i", *args, f"--as={account}", check=False)
        assert result.returncode in (0, 1), result.stderr  # yes, no
        return result.stdout.strip()

    assert can_i("get", "pods", "-n", namespace) == "yes"
    assert can_i("watch", "pods", "-n", namespace) == "yes"
    assert can_i("delete", "pods", "-n", namespace) == "no"
    assert can_i("get", "secrets", "-n", namespace) == "no"
    assert can_i("get", "pods", "-n", "default") == "no"
    # Anyone in system:masters may do anything; the account is not.
    assert can_i("create", "clusterroles") == "no"


def test_the_fake_node_renews_its_lease_as_a_kubelet_does(cluster: ControlPlane) -> None:
    """The node controller reads a node's health from its lease: one left to age marks the
    node NotReady after the grace period, and every pod on it not ready."""
    from tests.support.k8s import NODE_LEASE_SECONDS  # imported with the cluster (conftest)

    def renewed() -> str:
        lease = get(cluster, "kube-node-lease", "lease", NODE)
        return str(lease["spec"]["renewTime"])

    first = renewed()
    deadline = time.monotonic() + 3 * NODE_LEASE_SECONDS / 4  # renewed every quarter
    while renewed() == first:
        assert time.monotonic() < deadline, f"the lease of {NODE} was not renewed since {first}"
        time.sleep(1)
    node = get(cluster, "default", "node", NODE)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready
