"""The operator's sweep, its pod awareness, its status and its Events."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import kmock

from services.core.db.store import SqlTaskStore
from services.core.domain import Status
from tests.support.cluster import (
    NAMESPACE,
    POLICIES,
    apply_policy,
    has_status,
    held_by,
    policy,
    post,
    status_of,
    status_with,
    until,
    upgraded_policy,
    worker_pod,
)
from tests.support.database import expire_lease


async def test_applying_the_policy_starts_the_sweep_and_fills_its_status(
    operator: kmock.KubernetesEmulator, store: SqlTaskStore
) -> None:
    await held_by(store, "some-pod")
    await operator.post(
        f"/apis/conveyor.dev/v1/namespaces/{NAMESPACE}/recoverypolicies", json=policy()
    )
    status = await until(lambda: status_with(operator, "lastSweep"))
    assert status["inProgress"] == 1
    assert (status["stuck"], status["requeued"]) == (0, 0)


async def test_a_policy_is_swept_without_a_finalizer_and_deleted_at_once(
    operator: kmock.KubernetesEmulator,
) -> None:
    """Nothing of the operator's may hold a policy: `helm uninstall` deletes the operator
    and its RBAC together with it, and a finalizer left on it would keep it, and its
    namespace, Terminating for ever."""
    await apply_policy(operator)
    swept = operator.objects[POLICIES, NAMESPACE, "conveyor"]
    assert not swept["metadata"].get("finalizers")
    await operator.delete(f"/apis/conveyor.dev/v1/namespaces/{NAMESPACE}/recoverypolicies/conveyor")
    assert (POLICIES, NAMESPACE, "conveyor") not in operator.objects


async def test_the_finalizer_an_earlier_release_put_on_a_policy_is_taken_off(
    operator: kmock.KubernetesEmulator,
) -> None:
    """A policy swept by a release whose sweep was a kopf timer carries kopf's finalizer:
    left there, it would hold the policy once the operator is uninstalled."""
    await post(operator, "recoverypolicies", upgraded_policy())

    async def released() -> bool:
        found = operator.objects[POLICIES, NAMESPACE, "conveyor"]
        return not found["metadata"].get("finalizers")

    await until(released)


async def test_a_task_whose_lease_expired_is_requeued_and_completed(
    operator: kmock.KubernetesEmulator, store: SqlTaskStore, settings: Any
) -> None:
    from tests.support.services import running_api, running_worker, wait_for

    task_id = await held_by(store, "vanished-pod")
    await expire_lease(settings.database_url, task_id)
    quiet = settings.model_copy(update={"api_run_recovery": False})  # the operator's job here
    async with running_api(quiet) as api, running_worker(quiet):
        await post(operator, "recoverypolicies", policy())
        final = await wait_for(api, str(task_id), timeout=15)
    assert (final["status"], final["attempts"]) == ("COMPLETED", 2)
    status = await until(lambda: status_with(operator, "requeued"))
    assert status["requeued"] >= 1
    events = [e for key, e in operator.objects.items() if key[0] == "v1/events"]
    assert any(e["reason"] == "Requeued" and str(task_id) in e["message"] for e in events)


async def test_deleting_a_worker_pod_requeues_its_tasks_and_no_one_else_s(
    operator: kmock.KubernetesEmulator, store: SqlTaskStore
) -> None:
    await apply_policy(operator)
    for pod in ("worker-a", "worker-b"):
        await post(operator, "pods", worker_pod(pod))
    mine = [await held_by(store, "worker-a") for _ in range(2)]
    theirs = await held_by(store, "worker-b")
    await operator.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/worker-a")
    # Their leases have 300 s to run: back in the queue at once means by the pod's deletion.
    for task_id in mine:
        await until(lambda t=task_id: has_status(store, t, Status.PENDING))
    assert await status_of(store, theirs) is Status.IN_PROGRESS


async def test_an_oom_killed_container_hands_back_what_it_had_claimed(
    operator: kmock.KubernetesEmulator, store: SqlTaskStore
) -> None:
    await apply_policy(operator)
    for pod in ("worker-a", "worker-b"):
        await post(operator, "pods", worker_pod(pod))
    before = await held_by(store, "worker-a")
    theirs = await held_by(store, "worker-b")
    started = (await store.get(before)).started_at
    assert started is not None
    killed_at = started + timedelta(milliseconds=20)
    await asyncio.sleep(0.2)  # the claim below starts after the kill: time, not a guess
    # The restarted container keeps the pod's name; what it claims after the kill is its own.
    after = await held_by(store, "worker-a")
    oom = {
        "status": {
            "containerStatuses": [
                {
                    "name": "worker",
                    "restartCount": 1,
                    "state": {"running": {}},
                    "lastState": {
                        "terminated": {
                            "reason": "OOMKilled",
                            "exitCode": 137,
                            "finishedAt": killed_at.isoformat(),
                        }
                    },
                }
            ]
        }
    }
    await operator.patch(f"/api/v1/namespaces/{NAMESPACE}/pods/worker-a", json=oom)
    await until(lambda: has_status(store, before, Status.PENDING), timeout=1.0)
    assert await status_of(store, theirs) is Status.IN_PROGRESS
    assert await status_of(store, after) is Status.IN_PROGRESS


async def test_a_task_with_a_cancel_requested_becomes_cancelled_not_requeued(
    operator: kmock.KubernetesEmulator, store: SqlTaskStore
) -> None:
    await apply_policy(operator)
    await post(operator, "pods", worker_pod("worker-a"))
    task_id = await held_by(store, "worker-a")
    await store.cancel(task_id)
    await operator.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/worker-a")
    await until(lambda: has_status(store, task_id, Status.CANCELLED), timeout=1.0)
    events = [e for key, e in operator.objects.items() if key[0] == "v1/events"]
    assert any(e["reason"] == "Cancelled" for e in events)
