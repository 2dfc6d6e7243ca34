"""skaffold.yaml against the real API server: PostgreSQL and RabbitMQ are deployed before the
release (whose pre-install migration hook needs the database), and the release comes up.

There is no container builder here: the images are named as built elsewhere
(`skaffold deploy --images`), and kwok runs the pods.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.k8s import ControlPlane
from tests.support.tools import need

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
IMAGES = "conveyor-api=conveyor-api:dev,conveyor-worker=conveyor-worker:dev"
# A deploy takes about 10 s; past this (below the tier's TEST_TIMEOUT) it is stopped and
# the test shows what it said and what the namespace and the node hold.
DEPLOY_SECONDS = 300


def _volumes(cluster: ControlPlane, namespace: str) -> None:
    """A volume for each dev server's claim: the cluster has no provisioner."""
    for name in ("postgres", "rabbitmq"):
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{name}"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": f"/tmp/{namespace}/{name}"},
                "claimRef": {"namespace": namespace, "name": f"data-{name}-0"},
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(volume))


def _skaffold(cluster: ControlPlane, namespace: str, log: Path) -> tuple[int | None, str]:
    """skaffold deploy's exit code (None: stopped past DEPLOY_SECONDS) and output."""
    context = cluster.kubectl("config", "current-context").stdout.strip()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # its kubectl and helm
        "KUBECONFIG": str(cluster.kubeconfig),
        "SKAFFOLD_UPDATE_CHECK": "false",
        "SKAFFOLD_COLLECT_METRICS": "false",
    }
    command = [
        str(BIN / "skaffold"),
        "deploy",
        "--profile=kind",  # no KEDA in this cluster, as on a fresh kind cluster
        f"--images={IMAGES}",
        f"--namespace={namespace}",
        f"--kube-context={context}",
        "--status-check=true",
        "--verbosity=info",
    ]
    with log.open("w") as out:
        deploy = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            code: int | None = deploy.wait(timeout=DEPLOY_SECONDS)
        except subprocess.TimeoutExpired:
            deploy.kill()
            deploy.wait()
            code = None
    return code, log.read_text()


def _hung(cluster: ControlPlane, namespace: str, output: str) -> str:
    """What a deploy that did not end said, and what its namespace and the node hold."""
    state = cluster.kubectl(
        "-n", namespace, "get", "all,pvc,events", "-o", "wide", check=False
    )  # fmt: skip
    nodes = cluster.kubectl("get", "nodes,pv", "-o", "wide", check=False)
    return (
        f"skaffold deploy still running after {DEPLOY_SECONDS} s:\n{output[-6000:]}\n"
        f"{state.stdout}{state.stderr}{nodes.stdout}{nodes.stderr}"
    )


def test_skaffold_deploys_postgresql_and_rabbitmq_before_the_release_which_comes_up(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    need(f"skaffold ({ROOT}/.ci/install-k8s {BIN} builds it)", (BIN / "skaffold").exists())
    _volumes(cluster, namespace)
    code, output = _skaffold(cluster, namespace, tmp_path / "skaffold.log")
    assert code is not None, _hung(cluster, namespace, output)
    assert code == 0, output
    # What skaffold did, in its own words: the kubectl config's objects, then the release.
    databases = output.index("statefulset.apps/postgres")
    assert output.index("statefulset.apps/rabbitmq") < output.index("Helm release conveyor")
    assert databases < output.index("Helm release conveyor")
    release = cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout
    ready = {
        d["metadata"]["name"]: d["status"].get("readyReplicas", 0)
        for d in json.loads(release)["items"]
    }
    assert ready["conveyor-api"] >= 1 and ready["conveyor-worker"] >= 1, ready
    migration = cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json", check=False)
    jobs = json.loads(migration.stdout or '{"items": []}')["items"]
    assert all(job["status"].get("succeeded") for job in jobs), jobs
