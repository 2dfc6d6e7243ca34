"""The cluster tier: a real Kubernetes control plane (tests/support/k8s.py), started once
per session, with one fake node that kwok runs.

Its binaries are the ones beside this Python. When one is missing, .ci/install-k8s builds
them there before the first test (a first build takes about 25 minutes, a later one with
the same versions is cached); without them, or without the package cryptography, the tier
fails.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.tools import need

if TYPE_CHECKING:
    from tests.support.k8s import ControlPlane

ROOT = Path(__file__).parents[2]
HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
NODE = "fake-0"
# A cluster test's own time limit: above the longest wait it gives helm or kubectl
# (test_chart.HELM_TIMEOUT and COMMAND_TIMEOUT), so a slow wait fails with its own message.
TEST_TIMEOUT = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the control plane's binaries when a cluster test is to run and one is
    missing: here, not in the first test, whose time limit a build would pass."""
    if not any(HERE in Path(item.path).parents for item in session.items):
        return
    if importlib.util.find_spec("cryptography") is None:
        return  # the tier is skipped or fails without it: nothing to build for
    from tests.support.k8s import missing

    if not missing(BIN):
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nbuilding the cluster tests' control plane: .ci/install-k8s {BIN}", flush=True)
        subprocess.run([str(ROOT / ".ci" / "install-k8s"), str(BIN)], check=False)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    """The control plane, with the fake node `fake-0`, for the whole session."""
    need("the Python package cryptography", importlib.util.find_spec("cryptography") is not None)
    from tests.support import k8s

    lacking = k8s.missing(BIN)
    need(f"{', '.join(lacking)} (.ci/install-k8s {BIN} builds them)", not lacking)
    plane = k8s.start(BIN)
    try:
        plane.create_node(NODE)
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    """A namespace of this test's own, deleted after it."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
