"""The operator's sweep runs its passes through the same supervision as the API's loops: a
pass that raises is counted, backed off and survived, and shows in the operator's health
probe and in conveyor_loop_failing, as an API loop's does."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from typing import Any

import kmock
import pytest
from prometheus_client import REGISTRY

from services.core import supervision
from services.core.db.store import SqlTaskStore
from services.core.domain import Recovered
from services.core.recovery import recover
from services.operator import sweep
from tests.support.cluster import policy, post, status_with, until


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"loop": "recovery"}) or 0.0


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "BACKOFF_FIRST", 0.02)
    monkeypatch.setattr(supervision, "BACKOFF_MAX", 0.1)


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


async def test_a_sweep_pass_that_raises_is_counted_and_shown_until_one_works(
    operator: kmock.KubernetesEmulator,
    store: SqlTaskStore,
    health_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad_passes = threading.Event()  # read by the operator's thread
    calls: list[int] = []

    async def bad_row_then_fixed(store: SqlTaskStore) -> list[Recovered]:
        calls.append(1)
        if not bad_passes.is_set():
            raise TypeError(f"injected failure {len(calls)} of the sweep")
        return await recover(store)

    monkeypatch.setattr(sweep, "recover", bad_row_then_fixed)
    errors_before = _sample("conveyor_background_errors_total")
    await post(operator, "recoverypolicies", policy(interval=1))

    async def counted_three() -> bool:
        return _sample("conveyor_background_errors_total") - errors_before >= 3

    await until(counted_three, timeout=30)
    # Still ticking: the sweep survived its failed passes, and names the loop as failing.
    assert _sample("conveyor_loop_failing") == 1
    assert (await asyncio.to_thread(_health, health_port))["failing"] == ["recovery"]
    assert await status_with(operator, "lastSweep") is None

    bad_passes.set()  # the row is mended: the next pass works and the status fills
    await until(lambda: status_with(operator, "lastSweep"), timeout=30)
    assert _sample("conveyor_loop_failing") == 0
