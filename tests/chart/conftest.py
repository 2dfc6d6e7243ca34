"""The chart tests read kubernetes-validate's schemas once per run."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import kubernetes_validate.utils
import pytest


@pytest.fixture(scope="session", autouse=True)
def _schemas_read_once() -> Iterator[None]:
    """kubernetes-validate reads and parses its schema files (megabytes of JSON) on every
    call; they never change during a run, and validating leaves a schema as it was read."""
    read = kubernetes_validate.utils.schema_contents
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kubernetes_validate.utils, "schema_contents", cache(read))
        yield
