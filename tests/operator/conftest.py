"""The real kopf operator against an emulated Kubernetes API (kmock) and the real
PostgreSQL and RabbitMQ.

kopf runs in a thread with its own event loop, as in its own process: on stopping, it
cancels every task its loop started, which must not include the test's.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import kmock
import kopf
import pytest

from services.core.settings import Settings
from services.operator.handlers import build_registry
from services.operator.main import run_operator
from tests.support.cluster import NAMESPACE, POLICIES, metadata
from tests.support.services import free_port


@pytest.fixture
def cluster(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    """The emulated API, told about the built-in resources, the CRDs and the namespace."""
    kmock.resources.load_bundled()
    kmock.resources[POLICIES] = kmock.ResourceInfo(
        kind="RecoveryPolicy",
        singular="recoverypolicy",
        namespaced=True,
        verbs={"get", "list", "watch", "patch"},
        subresources={"status"},
    )
    kmock.resources["kopf.dev/v1/kopfpeerings"] = kmock.ResourceInfo(
        kind="KopfPeering",
        singular="kopfpeering",
        namespaced=True,
        verbs={"get", "list", "watch", "patch"},
    )
    kmock.objects["v1/namespaces", None, NAMESPACE] = {"metadata": {"name": NAMESPACE}}
    kmock.objects["kopf.dev/v1/kopfpeerings", NAMESPACE, "conveyor"] = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": metadata("conveyor"),
    }
    return kmock


@pytest.fixture
def health_port() -> int:
    """The port of the operator's health endpoint (/healthz) in this test."""
    return free_port()


@pytest.fixture
async def operator(
    cluster: kmock.KubernetesEmulator, settings: Settings, health_port: int
) -> Iterator[kmock.KubernetesEmulator]:
    """The operator as the chart runs it (peering on), logged in to the emulator."""
    registry = build_registry()
    server = str(cluster.url).rstrip("/")

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server, insecure=True, default_namespace=NAMESPACE)

    stop, ready = threading.Event(), threading.Event()
    settings = settings.model_copy(
        update={"operator_namespace": NAMESPACE, "operator_health_port": health_port}
    )
    thread = threading.Thread(
        target=asyncio.run,
        args=(run_operator(settings, registry=registry, stop=stop, ready=ready),),
        daemon=True,
    )
    thread.start()
    assert await asyncio.to_thread(ready.wait, 15), "the operator did not start"
    try:
        yield cluster
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)
        assert not thread.is_alive(), "the operator did not stop"
