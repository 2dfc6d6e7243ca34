"""Worker pools: a Deployment, a metrics Service and a ScaledObject each, on its queues;
and the settings every process reads from the ConfigMap."""

from __future__ import annotations

import json
import re
from typing import Any

from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask
from services.core.settings import Settings
from services.operator.pods import matches
from tests.chart.render import CHART, Manifest, by_kind, one, refusal, render
from tests.support.database import fetch
from tests.support.store import create

POOLS = CHART / "ci" / "pools-values.yaml"


def _env(deployment: Manifest) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value") for item in container["env"]}


def _pod(deployment: Manifest) -> dict[str, Any]:
    return {"metadata": deployment["spec"]["template"]["metadata"]}


def test_two_pools_run_on_their_own_nodes_and_take_their_own_queues() -> None:
    manifests = render(POOLS)
    default, gpu = one(manifests, "Deployment", "-worker"), one(manifests, "Deployment", "-gpu")
    assert _env(default)["CONVEYOR_WORKER_QUEUES"] == "default,partner"
    assert _env(gpu)["CONVEYOR_WORKER_QUEUES"] == "gpu"
    assert _env(gpu)["CONVEYOR_WORKER_CONCURRENCY"] == "2"
    spec = gpu["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"accelerator": "nvidia"}
    limits = spec["containers"][0]["resources"]["limits"]  # merged into worker's own
    assert limits == {"nvidia.com/gpu": 1, "memory": "256Mi"}
    assert "nodeSelector" not in default["spec"]["template"]["spec"]
    # No Deployment's selector takes another pool's pods.
    for deployment in (default, gpu):
        selector = deployment["spec"]["selector"]
        owned = [d for d in (default, gpu) if matches(selector, _pod(d))]
        assert owned == [deployment]
    assert _pod(gpu)["metadata"]["labels"]["conveyor.dev/pool"] == "gpu"


def test_each_pool_scales_on_its_own_queues_only() -> None:
    manifests = render(POOLS)
    scaled = {m["metadata"]["name"]: m for m in by_kind(manifests, "ScaledObject")}
    assert set(scaled) == {"conveyor-worker", "conveyor-worker-gpu"}
    queries = {name: m["spec"]["triggers"][0]["metadata"]["query"] for name, m in scaled.items()}
    assert "queue IN ('default', 'partner')" in queries["conveyor-worker"]
    assert "queue IN ('gpu')" in queries["conveyor-worker-gpu"]
    assert all("paused" in query for query in queries.values())
    assert scaled["conveyor-worker-gpu"]["spec"]["maxReplicaCount"] == 4
    assert scaled["conveyor-worker"]["spec"]["maxReplicaCount"] == 20  # worker's own
    assert {m["spec"]["scaleTargetRef"]["name"] for m in scaled.values()} == set(scaled)


def test_recovery_metrics_and_network_policy_cover_every_pool() -> None:
    manifests = render(
        POOLS, **{"networkPolicy.enabled": "true", "metrics.serviceMonitor.enabled": "true"}
    )
    pods = [_pod(d) for d in by_kind(manifests, "Deployment") if "-worker" in d["metadata"]["name"]]
    assert len(pods) == 2
    policy = one(manifests, "RecoveryPolicy")
    network = one(manifests, "NetworkPolicy", "-worker")
    for pod in pods:
        assert matches(policy["spec"]["workerSelector"], pod)
        assert matches(network["spec"]["podSelector"], pod)
    services = [
        s for s in by_kind(manifests, "Service") if s["metadata"]["name"].endswith("-metrics")
    ]
    monitor = one(manifests, "ServiceMonitor", "-worker")
    for service in services:  # one ServiceMonitor scrapes each pool's Service
        assert matches(monitor["spec"]["selector"], service)
    taken = sorted(
        next(
            i for i, pod in enumerate(pods) if matches({"matchLabels": s["spec"]["selector"]}, pod)
        )
        for s in services
    )
    assert taken == [0, 1]


def test_the_queues_reach_every_process_as_settings_read_them() -> None:
    config = one(render(POOLS), "ConfigMap", "-config")["data"]
    settings = Settings(queues=json.loads(config["CONVEYOR_QUEUES"]), worker_queues=["gpu"])
    queues = settings.queue_map()
    assert (queues["gpu"].max_running, queues["partner"].rate) == (4, 5)


def test_one_pool_by_default_keeps_the_worker_deployment_of_earlier_releases() -> None:
    manifests = render()
    (worker,) = [d for d in by_kind(manifests, "Deployment") if "-worker" in d["metadata"]["name"]]
    assert worker["metadata"]["name"] == "conveyor-worker"
    assert worker["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    assert _env(worker)["CONVEYOR_WORKER_QUEUES"] == "default"


def test_queues_without_default_or_with_bad_names_are_refused() -> None:
    assert "queues" in refusal(**{"queues[0].name": "gpu"})
    assert re.search("name", refusal(**{"workerPools[0].name": "GPU"}))
    assert "queues" in refusal(**{"workerPools[0].queues": "{}"})


def test_a_pool_taking_a_queue_that_is_not_defined_is_refused_naming_both() -> None:
    # Rendered, its workers would stop at start: CONVEYOR_WORKER_QUEUES names an unknown queue.
    refused = refusal(**{"workerPools[0].name": "default", "workerPools[0].queues[0]": "images"})
    assert 'pool "default" takes queue "images", which queues does not define' in refused
    assert "(defined: default)" in refused


async def test_a_pools_scaling_query_counts_its_queues_within_their_caps(
    store: SqlTaskStore, settings: Settings
) -> None:
    """Run as KEDA would, on the real database: ready and running tasks of the pool's
    queues, at most maxRunning for a capped queue, none of a paused one."""
    scaled = {m["metadata"]["name"]: m for m in by_kind(render(POOLS), "ScaledObject")}
    query = {name: m["spec"]["triggers"][0]["metadata"]["query"] for name, m in scaled.items()}
    for queue, count in (("gpu", 10), ("partner", 3), ("default", 2)):
        for _ in range(count):
            await create(store, NewTask(title="t", kind="noop", queue=queue))

    async def wanted(name: str) -> int:
        return int((await fetch(settings.database_url, query[name]))[0][0])

    assert await wanted("conveyor-worker-gpu") == 4  # maxRunning: 4
    assert await wanted("conveyor-worker") == 5  # default and partner, no cap
    await store.set_paused("gpu", True)
    assert await wanted("conveyor-worker-gpu") == 0


def test_retention_and_schedule_values_reach_the_settings(monkeypatch: Any) -> None:
    sets = {
        "retention.completedDays": "1",
        "retention.failedDays": "0",
        "schedules.graceSeconds": "5",
        "schedules.maxPerTenant": "7",
    }
    config = one(render(**sets), "ConfigMap", "-config")["data"]
    for name, value in config.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.retention_days() == {"COMPLETED": 1.0, "CANCELLED": 30.0}  # 0: for ever
    assert (settings.schedule_grace_seconds, settings.max_schedules_per_tenant) == (5, 7)
    assert "/retention/failedDays" in refusal(**{"retention.failedDays": "-1"})


def test_the_relay_counts_a_consumer_as_holding_the_largest_pools_concurrency() -> None:
    """Its lost-message check counts what the consumers hold: too few would send spare
    messages behind every backlog of a larger pool."""
    manifests = render(POOLS, **{"workerPools[1].concurrency": "40"})
    assert one(manifests, "ConfigMap", "-config")["data"]["CONVEYOR_WORKER_CONCURRENCY"] == "40"
    gpu = one(manifests, "Deployment", "-worker-gpu")
    assert _env(gpu)["CONVEYOR_WORKER_CONCURRENCY"] == "40"
    assert one(render(), "ConfigMap", "-config")["data"]["CONVEYOR_WORKER_CONCURRENCY"] == "16"
