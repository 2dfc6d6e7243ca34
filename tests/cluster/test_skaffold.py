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


def _skaffold(cluster: ControlPlane, namespace: str) -> subprocess.CompletedProcess[str]:
    context = cluster.kubectl("config", "current-context").stdout.strip()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # its kubectl and helm
        "KUBECONFIG": str(cluster.kubeconfig),
        "SKAFFOLD_UPDATE_CHECK": "false",
        "SKAFFOLD_COLLECT_METRICS": "false",
    }
    return subprocess.run(
        [
            str(BIN / "skaffold"),
            "deploy",
            "--profile=kind",  # no KEDA in this cluster, as on a fresh kind cluster
            f"--images={IMAGES}",
            f"--namespace={namespace}",
            f"--kube-context={context}",
            "--status-check=true",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_skaffold_deploys_postgresql_and_rabbitmq_before_the_release_which_comes_up(
    cluster: ControlPlane, namespace: str
) -> None:
    need(f"skaffold ({ROOT}/.ci/install-k8s {BIN} builds it)", (BIN / "skaffold").exists())
    _volumes(cluster, namespace)
    done = _skaffold(cluster, namespace)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
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
