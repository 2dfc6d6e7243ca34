"""The recovery sweep of each RecoveryPolicy: a loop of the operator's own, not a kopf timer.

kopf puts a finalizer on every object a timer or daemon runs for, and only a running
operator takes it off. `helm uninstall` deletes the operator's Deployment and its RBAC in
the same breath as the policy, so a timer's finalizer would keep the policy, and its
namespace, Terminating for ever. So the operator learns of policies through a watch
(`kopf.on.event`, which puts no finalizer on anything), and this loop sweeps each one
when its interval is due and writes its status. A deleted policy is forgotten.

The chart runs one replica (Recreate: the old one is gone before the new one starts). Two
would both sweep, which is harmless to the tasks, as every hand-back is one guarded
statement (the API processes run the same sweep); each adopts the other's newer status,
so the totals only lag a little.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kopf._cogs.clients.patching import patch_obj  # kopf's own status write, with its login
from kopf._cogs.structs.references import Resource

from services.core.domain import Status
from services.core.recovery import recover
from services.core.supervision import Supervisor

GROUP, VERSION, PLURAL = "conveyor.dev", "v1", "recoverypolicies"
RESOURCE = Resource(
    GROUP,
    VERSION,
    PLURAL,
    kind="RecoveryPolicy",
    namespaced=True,
    subresources=frozenset({"status"}),
)
# How often the loop looks for a policy whose interval is due.
TICK_SECONDS = 1.0
TOTALS = {Status.PENDING: "requeued", Status.CANCELLED: "cancelled", Status.FAILED: "failed"}
REASONS = {Status.PENDING: "Requeued", Status.CANCELLED: "Cancelled", Status.FAILED: "Failed"}


@dataclass
class Policy:
    """What the loop keeps of one policy: the object to post Events on, its spec, and the
    status it writes (taken from the object when first seen, then kept here)."""

    ref: dict[str, Any]
    spec: Mapping[str, Any]
    last_sweep: datetime | None = None
    totals: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Policy:
        status = body.get("status") or {}
        last = status.get("lastSweep")
        return cls(
            ref=reference(body),
            spec=dict(body.get("spec") or {}),
            last_sweep=datetime.fromisoformat(last.replace("Z", "+00:00")) if last else None,
            totals={key: int(status.get(key, 0)) for key in TOTALS.values()},
        )

    def update(self, body: Mapping[str, Any]) -> None:
        """Take a changed spec, and a status newer than the one kept (another replica's)."""
        self.spec = dict(body.get("spec") or {})
        seen = Policy.of(body)
        if seen.last_sweep is not None and (
            self.last_sweep is None or seen.last_sweep > self.last_sweep
        ):
            self.last_sweep, self.totals = seen.last_sweep, seen.totals

    def due(self, now: datetime) -> bool:
        """True when `sweepIntervalSeconds` (a third of `leaseSeconds` by default) has
        passed since the last sweep."""
        if self.last_sweep is None:
            return True
        lease = float(self.spec.get("leaseSeconds", 30))
        interval = float(self.spec.get("sweepIntervalSeconds") or lease / 3)
        return (now - self.last_sweep).total_seconds() >= interval - TICK_SECONDS / 2


def reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """An object's kind and names: enough to post Events on it."""
    meta = body["metadata"]
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {key: meta.get(key) for key in ("name", "namespace", "uid")},
    }


@dataclass
class Sweeping:
    """The operator's one sweep loop. kopf gives each object's handlers a shallow copy of
    the operator's memo, so the loop's task is kept in this holder, which every copy
    shares: set as an attribute of a copy, each policy would start a loop of its own, and
    the cleanup (given the operator's memo) would stop none."""

    task: asyncio.Task[None] | None = None


async def policy_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the policies the loop sweeps: a new one is swept at once, a deleted one no more.
    The first one starts the loop, from here: a handler's task carries kopf's login and
    its Event queue, which the loop's status writes and Events need."""
    sweeping: Sweeping = memo.sweeping
    if sweeping.task is None:
        sweeping.task = asyncio.create_task(sweep_forever(memo), name="recovery-sweep")
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    known = memo.policies.get(key)
    if type == "DELETED":
        memo.policies.pop(key, None)
    elif known is None or known.ref["metadata"]["uid"] != body["metadata"]["uid"]:
        memo.policies[key] = Policy.of(body)  # new, or deleted and made again
    else:
        known.update(body)


async def stop_sweeping(memo: kopf.Memo, **_: Any) -> None:
    """Stop the loop when the operator stops."""
    sweeping: Sweeping = memo.sweeping
    if sweeping.task is not None:
        sweeping.task.cancel()
        await asyncio.gather(sweeping.task, return_exceptions=True)


async def sweep_forever(memo: kopf.Memo) -> None:
    """Each tick, sweep the policies that are due, each pass under the Supervisor."""
    supervisor: Supervisor = memo.supervisor
    while True:
        now = datetime.now(UTC)
        for policy in [p for p in memo.policies.values() if p.due(now)]:
            await supervisor.run_once("recovery", functools.partial(_sweep, policy, memo))
        await asyncio.sleep(TICK_SECONDS)


async def _sweep(policy: Policy, memo: kopf.Memo) -> float:
    recovered = await recover(memo.store)
    post_events(policy.ref, recovered, "its lease expired")
    for task in recovered:
        policy.totals[TOTALS[task.status]] += 1
    policy.last_sweep = datetime.now(UTC)
    status = {
        "lastSweep": policy.last_sweep.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "inProgress": await memo.store.count_in_progress(),
        "stuck": len(recovered),
        **policy.totals,
    }
    meta = policy.ref["metadata"]
    await patch_obj(
        settings=memo.settings,
        resource=RESOURCE,
        namespace=meta["namespace"],
        name=meta["name"],
        patch=kopf.Patch({"status": status}),
        logger=logging.getLogger(__name__),
    )
    return 0.0


def post_events(target: Mapping[str, Any], recovered: list[Any], why: str) -> None:
    """One Event on `target` for each task handed back, saying what became of it and why."""
    for task in recovered:
        # kopf types the object as its Body; a plain dict of the object names it just as well.
        kopf.info(
            dict(target),  # type: ignore[arg-type]
            reason=REASONS[task.status],
            message=f"task {task.id}: {task.status} after {task.attempts} attempt(s), "
            f"because {why}",
        )
