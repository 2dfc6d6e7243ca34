"""The chart's autoscaling with KEDA for real: KEDA's operator and metrics adapter
(tests/support/keda.py) read the release's ScaledObject and TriggerAuthentication, count
the tasks in PostgreSQL with the chart's query, and the API server's horizontal pod
autoscaler, fed through the aggregated external metrics API, sets the worker Deployment's
replicas. No worker runs (pods are kwok's), so queued tasks stay queued until the test
finishes them itself.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from services.core.db.engine import create_engine
from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask
from services.core.settings import Settings
from tests.cluster.test_chart import Release, base_values, new_database, wait_until
from tests.support.database import connect
from tests.support.store import create
from tests.support.tools import need

if TYPE_CHECKING:
    from tests.support.k8s import ControlPlane
    from tests.support.keda import Keda

__all__ = ["new_database"]  # a fixture of this module's test

TASKS_PER_REPLICA = 5
MAX_REPLICAS = 4


@pytest.fixture(scope="module")
def keda(cluster: ControlPlane) -> Iterator[Keda]:
    from tests.support import keda

    lacking = keda.missing(cluster.bin_dir)
    need(f"{', '.join(lacking)} (.ci/install-k8s {cluster.bin_dir} builds them)", not lacking)
    running = keda.start(cluster)
    try:
        yield running
    finally:
        running.stop()


async def submit(database_url: str, count: int) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        store = SqlTaskStore(engine)
        for n in range(count):
            await create(store, NewTask(title=f"backlog {n}", kind="noop"))
    finally:
        await engine.dispose()


async def clear(database_url: str) -> None:
    connection = await connect(database_url)
    try:
        await connection.execute("DELETE FROM tasks")
    finally:
        await connection.close()


def replicas(release: Release) -> int:
    return int(release.deployment("worker")["spec"].get("replicas", 1))


def becomes(release: Release, wanted: int, timeout: float = 60) -> None:
    wait_until(
        lambda: replicas(release) == wanted, f"the worker Deployment at {wanted} replicas", timeout
    )


def external_metric(release: Release, hpa: dict[str, Any]) -> float:
    """The value the autoscaler reads, asked of the aggregated API as it asks."""
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]
    selector = ",".join(f"{k}={v}" for k, v in metric["selector"]["matchLabels"].items())
    path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{release.namespace}/"
        f"{metric['name']}?labelSelector={selector}"
    )
    answer = json.loads(release.cluster.kubectl("get", "--raw", path).stdout)
    (item,) = answer["items"]
    quantity = item["value"]  # "12", or "12500m"
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_keda_scales_the_workers_on_queued_tasks_up_and_back_to_zero(
    keda: Keda,
    cluster: ControlPlane,
    namespace: str,
    tmp_path: Path,
    settings: Settings,
    new_database: str,
) -> None:
    values = base_values(new_database, settings.amqp_url)
    values["worker"]["keda"] = {
        "enabled": True,
        "minReplicaCount": 0,
        "maxReplicaCount": MAX_REPLICAS,
        "tasksPerReplica": TASKS_PER_REPLICA,
        "pollingInterval": 1,
        "cooldownPeriod": 2,
        "scaleDownStabilizationSeconds": 0,
    }
    release = Release(cluster, namespace, "scaled", tmp_path, values)
    release.deploy("install")
    name = f"{release.fullname}-worker"

    # KEDA took the ScaledObject: its trigger authenticated against PostgreSQL with the
    # release's Secret, and it made the autoscaler that owns the replica count.
    def ready() -> bool:
        conditions = release.get("scaledobject", name).get("status", {}).get("conditions", [])
        return {"type": "Ready", "status": "True"} in [
            {"type": c["type"], "status": c["status"]} for c in conditions
        ]

    wait_until(ready, f"ScaledObject {name} Ready\n{keda.log('keda-operator', 20)}")
    hpa = release.get("hpa", f"keda-hpa-{name}")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, MAX_REPLICAS)
    assert hpa["spec"]["scaleTargetRef"]["name"] == name

    # Nothing to do: KEDA scales the pool to zero after its cooldown.
    becomes(release, 0)

    # A backlog: KEDA wakes the pool, and the autoscaler sizes it from the count it reads
    # through the aggregated API, one replica per TASKS_PER_REPLICA tasks.
    backlog = 12
    asyncio.run(submit(new_database, backlog))
    becomes(release, math.ceil(backlog / TASKS_PER_REPLICA))
    assert external_metric(release, hpa) == backlog

    # More than the most it may have: held at maxReplicaCount.
    asyncio.run(submit(new_database, 30))
    becomes(release, MAX_REPLICAS)

    # The backlog gone: back to zero.
    asyncio.run(clear(new_database))
    becomes(release, 0)
    assert external_metric(release, hpa) == 0

    # An uninstall while KEDA runs: KEDA lets go of its ScaledObject (its finalizer) and
    # the autoscaler it made goes with it.
    release.helm("uninstall", release.name, "--wait", "--timeout=90s")
    wait_until(
        lambda: not release.get("scaledobjects,hpa")["items"],
        "no ScaledObject or HorizontalPodAutoscaler left",
    )
