"""Helpers for the operator's tests: objects as an API server holds them, and waits."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import kmock

from services.core.db.store import SqlTaskStore
from services.core.domain import NewTask, Status
from tests.support.store import create

NAMESPACE = "tasks"
POLICIES = "conveyor.dev/v1/recoverypolicies"


def metadata(name: str, **more: Any) -> dict[str, Any]:
    # The emulator stores objects as given: add what an API server would.
    return {
        "name": name,
        "namespace": NAMESPACE,
        "uid": str(uuid.uuid4()),
        "resourceVersion": "1",
        **more,
    }


def policy(name: str = "conveyor", interval: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1",
        "kind": "RecoveryPolicy",
        "metadata": metadata(name),
        "spec": {
            "leaseSeconds": 30,
            "sweepIntervalSeconds": interval,
            "workerSelector": {"matchLabels": {"app.kubernetes.io/component": "worker"}},
        },
    }


def upgraded_policy() -> dict[str, Any]:
    """A policy as a release whose sweep was a kopf timer left it: with kopf's finalizer."""
    upgraded = policy()
    upgraded["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
    return upgraded


def worker_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(name, labels={"app.kubernetes.io/component": "worker"}),
        "spec": {"containers": [{"name": "worker", "image": "conveyor-worker"}]},
        "status": {"phase": "Running"},
    }


async def held_by(store: SqlTaskStore, worker: str) -> uuid.UUID:
    task, _ = await create(store, NewTask(title="t", kind="noop"))
    # Sent but not confirmed, so only the ticket naming it takes it: this worker holds it.
    await store.reserve_due(100)
    claim = await store.claim_named(worker, 300, task.id)
    assert claim is not None and claim.task.id == task.id
    return task.id


async def until(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def policy_status(cluster: kmock.KubernetesEmulator) -> dict[str, Any]:
    return dict(cluster.objects[POLICIES, NAMESPACE, "conveyor"].get("status") or {})


async def status_with(cluster: kmock.KubernetesEmulator, key: str) -> dict[str, Any] | None:
    status = await policy_status(cluster)
    return status if key in status else None


async def post(cluster: kmock.KubernetesEmulator, plural: str, body: dict[str, Any]) -> None:
    group = "api/v1" if plural == "pods" else "apis/conveyor.dev/v1"
    response = await cluster.post(f"/{group}/namespaces/{NAMESPACE}/{plural}", json=body)
    assert response.status < 300, await response.text()


async def apply_policy(cluster: kmock.KubernetesEmulator) -> None:
    """Apply a policy that sweeps rarely, and wait until the operator has taken it in."""
    await post(cluster, "recoverypolicies", policy(interval=3600))
    await until(lambda: status_with(cluster, "lastSweep"))


async def status_of(store: SqlTaskStore, task_id: uuid.UUID) -> Status:
    return (await store.get(task_id)).status


async def has_status(store: SqlTaskStore, task_id: uuid.UUID, status: Status) -> bool:
    return await status_of(store, task_id) is status
