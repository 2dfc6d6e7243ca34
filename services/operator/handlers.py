"""The kopf handlers, thin: what becomes of a task is decided in services.core.recovery.

- One RecoveryPolicy per installation says how often to sweep and which worker pods to
  watch. The operator's own loop (`sweep.py`, not a kopf timer, so no finalizer holds
  up an uninstall) sweeps for expired leases when the policy's interval is due, and keeps
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
from typing import Any

import kopf

from services.core.db.store import SqlTaskStore
from services.core.recovery import recover_worker
from services.core.supervision import Supervisor
from services.operator.pods import gone_since, matches
from services.operator.sweep import (
    GROUP,
    PLURAL,
    VERSION,
    Sweeping,
    policy_changed,
    post_events,
    reference,
    stop_sweeping,
)


def build_registry() -> kopf.OperatorRegistry:
    """A registry with these handlers and nothing else; the caller adds how to log in."""
    registry = kopf.OperatorRegistry()
    # kopf types handlers as callables of every keyword it may pass; ours take a few.
    kopf.index(GROUP, VERSION, PLURAL, registry=registry)(policies)  # type: ignore[arg-type]
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(policy_changed)
    kopf.on.cleanup(registry=registry)(stop_sweeping)
    kopf.on.event("", "v1", "pods", registry=registry)(pod_changed)  # type: ignore[arg-type]
    kopf.on.probe(id="failing", registry=registry)(failing)
    return registry


def new_memo(store: SqlTaskStore, settings: kopf.OperatorSettings) -> kopf.Memo:
    """What the handlers share: the store, the policies to sweep, the sweep loop, the
    Supervisor of its passes, and kopf's settings (its status writes need them). Each
    object's handlers get a shallow copy: what they change must be a shared container."""
    return kopf.Memo(
        store=store, supervisor=Supervisor(), policies={}, sweeping=Sweeping(), settings=settings
    )


def failing(memo: kopf.Memo, **_: Any) -> list[str]:
    """The health probe's `failing`: the loops whose last passes all failed."""
    supervisor: Supervisor = memo.supervisor
    return supervisor.failing()


def policies(
    body: kopf.Body, namespace: str, spec: Mapping[str, Any], **_: Any
) -> dict[str, dict[str, Any]]:
    """Each policy's worker selector, by namespace, and a reference to post Events on."""
    selector = dict(spec.get("workerSelector") or {})
    return {namespace: {"selector": selector, "ref": reference(body)}}


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
            post_events(policy["ref"], recovered, f"worker pod {name} {gone}")
