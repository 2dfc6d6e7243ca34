"""The operator process: `conveyor operator`."""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf

from services.core.db.engine import create_engine
from services.core.db.schema import wait_for_schema
from services.core.db.store import SqlTaskStore
from services.core.loops import Parts, subscribe
from services.core.settings import Settings
from services.operator.handlers import build_registry, new_memo

logger = logging.getLogger(__name__)


def operator_settings(settings: Settings) -> kopf.OperatorSettings:
    """kopf's settings: peering so that one replica is active, quiet per-tick logs."""
    options = kopf.OperatorSettings()
    if settings.operator_peering:
        # Replicas of equal priority pause each other's pod reactions (the sweep is a loop
        # of its own, harmless twice: see sweep.py).
        options.peering.name = settings.operator_peering
        options.peering.mandatory = True
    else:
        options.peering.standalone = True
    # Only the namespace it is given, and the CRDs the chart installed before it started:
    # no cluster-wide scans, so its RBAC stays inside that namespace.
    options.scanning.disabled = True
    options.posting.level = logging.INFO
    options.watching.server_timeout = 300
    return options


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account in a cluster; a kubeconfig elsewhere."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


async def run_operator(
    settings: Settings,
    registry: kopf.OperatorRegistry | None = None,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Run the handlers in the namespace CONVEYOR_OPERATOR_NAMESPACE until stopped.

    Without `registry`, the handlers log in with the pod's service account or a kubeconfig.
    """
    if registry is None:
        registry = build_registry()
        kopf.on.login(registry=registry)(login)
    # The sweep ticks every second; its own success lines would drown the useful ones.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    engine = create_engine(settings)
    try:
        await wait_for_schema(engine)
        options = operator_settings(settings)
        store = SqlTaskStore(engine)
        subscribe(Parts(settings, store))  # its recoveries are counted as every process's
        await kopf.operator(
            registry=registry,
            settings=options,
            namespaces=[settings.operator_namespace],
            memo=new_memo(store, options),
            liveness_endpoint=f"http://0.0.0.0:{settings.operator_health_port}/healthz",
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        await engine.dispose()
