"""The chart's operator RBAC covers every API call the operator makes, and nothing more."""

from __future__ import annotations

from typing import Any

import kmock

from services.core.db.store import SqlTaskStore
from services.core.domain import Status
from services.core.settings import Settings
from tests.chart.render import by_kind, render
from tests.support.cluster import (
    NAMESPACE,
    has_status,
    held_by,
    post,
    status_with,
    until,
    upgraded_policy,
    worker_pod,
)
from tests.support.database import expire_lease

_VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "DELETE": "delete"}


def _permission(request: Any) -> tuple[str, str, str]:
    action = request.action.name
    verb = (
        {"PATCH": "patch", "PUT": "update"}[request.method.name]
        if action == "UPDATE"
        else _VERBS[action]
    )
    plural = request.resource.plural
    if request.subresource:
        plural = f"{plural}/{request.subresource}"
    return request.resource.group, plural, verb


def _granted() -> set[tuple[str, str, str]]:
    roles = [r for r in by_kind(render(), "Role") if r["metadata"]["name"].endswith("-operator")]
    assert len(roles) == 1
    return {
        (group, resource, verb)
        for rule in roles[0]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


async def test_the_role_grants_exactly_what_the_operator_uses(
    operator: kmock.KubernetesEmulator, store: SqlTaskStore, settings: Settings
) -> None:
    # Everything the operator does: take a policy in (taking off the finalizer an earlier
    # release left), sweep, requeue (with an Event), and react to a worker pod that is gone.
    expired = await held_by(store, "vanished")
    await expire_lease(settings.database_url, expired)
    await post(operator, "recoverypolicies", upgraded_policy())  # as an upgrade finds it
    await until(lambda: status_with(operator, "requeued"))
    await post(operator, "pods", worker_pod("worker-a"))
    task_id = await held_by(store, "worker-a")
    await operator.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/worker-a")
    await until(lambda: has_status(store, task_id, Status.PENDING))  # the pod reaction ran

    used = {
        _permission(r)
        for r in operator
        if r.headers.get("User-Agent", "").startswith("kopf/")
        and r.resource is not None
        and r.resource.plural is not None
    }
    granted = _granted()
    assert used <= granted, f"missing from the Role: {used - granted}"
    assert granted <= used, f"granted but never used: {granted - used}"
