"""The kopf handlers, thin: what becomes of a task is decided in services.core.recovery.

- One RecoveryPolicy per installation says how often to sweep and which worker pods to
  watch. A timer sweeps for expired leases when the policy's interval is due, and keeps
  the policy's status (shown by `kubectl get recoverypolicies`).
- When a watched worker pod is gone (deleted, evicted, failed) or its container was
  OOM-killed, that pod's tasks go back at once, without waiting for their leases.
- Each task handed back is a Kubernetes Event on the policy.
- Each sweep pass runs under the operator's Supervisor, as the API's loops do: a pass that
  raises is counted and backed off, and a sweep that keeps failing is named by the health
  probe (`/healthz`: `{"failing": ["recovery"]}`), which stays 200: a restart mends no row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from services.core.db.store import SqlTaskStore
from services.core.domain import Recovered
from services.core.recovery import recover, recover_worker
from services.core.supervision import Supervisor
from services.operator.pods import gone_since, matches

GROUP, VERSION, PLURAL = "conveyor.dev", "v1", "recoverypolicies"

_REASONS = {"PENDING": "Requeued", "CANCELLED": "Cancelled", "FAILED": "Failed"}
_TOTALS = {"PENDING": "requeued", "CANCELLED": "cancelled", "FAILED": "failed"}


def build_registry() -> kopf.OperatorRegistry:
    """A registry with these handlers and nothing else; the caller adds how to log in."""
    registry = kopf.OperatorRegistry()
    # kopf types handlers as callables of every keyword it may pass; ours take a few.
    kopf.index(GROUP, VERSION, PLURAL, registry=registry)(policies)  # type: ignore[arg-type]
    kopf.timer(GROUP, VERSION, PLURAL, interval=1.0, registry=registry)(sweep)
    kopf.on.event("", "v1", "pods", registry=registry)(pod_changed)  # type: ignore[arg-type]
    kopf.on.probe(id="failing", registry=registry)(failing)
    return registry


def new_memo(store: SqlTaskStore) -> kopf.Memo:
    """What the handlers share: the store, and the Supervisor of the sweep's passes."""
    return kopf.Memo(store=store, supervisor=Supervisor())


def failing(memo: kopf.Memo, **_: Any) -> list[str]:
    """The health probe's `failing`: the loops whose last passes all failed."""
    supervisor: Supervisor = memo.supervisor
    return supervisor.failing()


def policies(
    body: kopf.Body, namespace: str, spec: Mapping[str, Any], **_: Any
) -> dict[str, dict[str, Any]]:
    """Each policy's worker selector, by namespace, and a reference to post Events on."""
    reference = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {key: body["metadata"].get(key) for key in ("name", "namespace", "uid")},
    }
    return {namespace: {"selector": dict(spec.get("workerSelector") or {}), "ref": reference}}


async def sweep(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    patch: kopf.Patch,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Hand back tasks whose lease expired, each `sweepIntervalSeconds`; update the status.

    A timer ticks every second and sweeps when the policy's own interval is due. A pass is
    supervised: one that fails is counted and backed off (the tick waits), leaves the
    status as it was, and the next tick sweeps again.
    """
    if not _due(spec, status):
        return

    async def one_pass() -> float:
        recovered = await recover(memo.store)
        _post_events(body, recovered, "its lease expired")
        totals = {key: int(status.get(key, 0)) for key in _TOTALS.values()}
        for task in recovered:
            totals[_TOTALS[task.status]] += 1
        patch.status.update(
            {
                "lastSweep": _now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "inProgress": await memo.store.count_in_progress(),
                "stuck": len(recovered),
                **totals,
            }
        )
        return 0.0

    supervisor: Supervisor = memo.supervisor
    await supervisor.run_once("recovery", one_pass)


async def pod_changed(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    name: str,
    policies: kopf.Index[str, dict[str, Any]],
    memo: kopf.Memo,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """Hand back a watched worker pod's tasks as soon as that pod is gone or OOM-killed."""
    watching = [
        policy for policy in policies.get(namespace, []) if matches(policy["selector"], body)
    ]
    if not watching:
        return
    gone, since = gone_since(type, body)
    if gone is None:
        return
    recovered = await recover_worker(memo.store, name, since)
    if recovered:
        logger.info("worker pod %s %s: %d task(s) handed back", name, gone, len(recovered))
        for policy in watching:
            _post_events(policy["ref"], recovered, f"worker pod {name} {gone}")


def _due(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    interval = float(spec.get("sweepIntervalSeconds") or float(spec.get("leaseSeconds", 30)) / 3)
    last = status.get("lastSweep")
    if not last:
        return True
    elapsed = (_now() - datetime.fromisoformat(last.replace("Z", "+00:00"))).total_seconds()
    return elapsed >= interval - 0.5  # the timer ticks each second


def _now() -> datetime:
    return datetime.now(UTC)


def _post_events(target: Mapping[str, Any], recovered: list[Recovered], why: str) -> None:
    for task in recovered:
        # kopf types the object as its Body; a plain dict of the object names it just as well.
        kopf.info(
            dict(target),  # type: ignore[arg-type]
            reason=_REASONS[task.status],
            message=f"task {task.id}: {task.status} after {task.attempts} attempt(s), "
            f"because {why}",
        )
